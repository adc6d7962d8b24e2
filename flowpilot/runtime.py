"""Shared steps of the CLI commands: Django in this process, migrations, the seed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from flowpilot import config


def django_setup() -> None:
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    from resources.django_setup import ensure_django

    ensure_django()


def migrate() -> None:
    django_setup()
    from django.core.management import call_command

    call_command("migrate", database="owner", verbosity=0, interactive=False)


def close_db() -> None:
    from django.db import connections

    connections.close_all()


def start_database(cfg: config.Config) -> bool:
    """Start the embedded server when no database URLs are set; True if this call started it."""
    if not cfg.embedded:
        return False
    from flowpilot import pg

    return pg.start(cfg)


def stop_database(cfg: config.Config, started: bool) -> None:
    if started:
        from flowpilot import pg

        close_db()
        pg.stop(cfg)


@contextmanager
def database(cfg: config.Config) -> Iterator[bool]:
    """The embedded database for the duration of a command: started if needed, and stopped on
    the way out only if this command started it. Yields whether it did."""
    started = start_database(cfg)
    try:
        yield started
    finally:
        stop_database(cfg, started)
