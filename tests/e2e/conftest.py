from __future__ import annotations

import os
import socket

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def fresh_env(tmp_path):
    """Environment for a whole FlowPilot installation of its own: home, database, ports."""
    env = dict(os.environ)
    for name in (
        "DATABASE_URL",
        "DAGSTER_PG_URL",
        "DATABASE_OWNER_URL",
        "DAGSTER_HOME",
        "DAGSTER_URL",
    ):
        env.pop(name, None)
    env.update(
        FLOWPILOT_HOME=str(tmp_path / "home"),
        FLOWPILOT_PORT=str(free_port()),
        FLOWPILOT_DAGSTER_PORT=str(free_port()),
        DJANGO_SETTINGS_MODULE="control_plane.settings.dev",
    )
    yield env
    # Whatever happened, leave no server behind.
    from flowpilot import config, pg

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        pg.stop(config.load())
    finally:
        os.environ.clear()
        os.environ.update(saved)
