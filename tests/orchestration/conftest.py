"""Fixtures for tests that run Dagster instances on the embedded PostgreSQL with warm run
workers: a Dagster storage database of the session's own, and the environment a zygote
inherits."""

from __future__ import annotations

from urllib.parse import quote

import psutil
import pytest

from flowpilot import config

SETTINGS = "control_plane.settings.test"


def _url(settings: dict, database: str, user: str, driver: str = "postgresql") -> str:
    host, port = settings["HOST"], settings["PORT"]
    if host.startswith("/"):
        return f"{driver}://{user}:@/{database}?host={quote(host, safe='/')}"
    password = quote(settings.get("PASSWORD") or "")
    return f"{driver}://{user}:{password}@{host}:{port or 5432}/{database}"


@pytest.fixture(scope="session")
def dagster_storage_url(django_db_setup, django_db_blocker):
    """A Dagster run/event storage database of this test session's own, next to its test
    database, dropped at the end."""
    from django.db import connection

    settings = dict(connection.settings_dict)
    name = f"{settings['NAME']}_dagster"
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    yield _url(settings, name, settings["USER"], driver="postgresql+psycopg2")
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def worker_environment(django_db_setup):
    """The environment the zygote inherits: the control plane's test database."""
    from django.db import connection

    settings = connection.settings_dict
    return {
        "DATABASE_URL": _url(settings, settings["NAME"], config.APP_ROLE),
        "DATABASE_OWNER_URL": _url(settings, settings["NAME"], settings["USER"]),
        "DJANGO_SETTINGS_MODULE": SETTINGS,
    }


@pytest.fixture
def warm_workers_exit(request):
    """A worker closes its execution after the run's last event: let every worker of the test's
    `instance` exit before the test database is flushed (its writes would deadlock the
    TRUNCATE)."""
    yield
    if "instance" not in request.fixturenames:
        return
    pool = request.getfixturevalue("instance").run_launcher.pool()

    def workers() -> list[psutil.Process]:
        found = []
        for pid in pool.zygote_pids():
            try:
                found += psutil.Process(pid).children()
            except psutil.NoSuchProcess:
                pass
        return found

    _, alive = psutil.wait_procs(workers(), timeout=30)
    assert not alive, f"workers still running after the test: {[p.pid for p in alive]}"
