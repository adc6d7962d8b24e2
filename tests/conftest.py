"""Tests run against the real embedded PostgreSQL (pgvector) under FLOWPILOT_HOME: started here
when it is not running, and stopped at the end if this session started it."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from control_plane.users.sessions import session_create
from flowpilot import config, pg
from flowpilot.echo_server import EchoServer
from tests.factories import (
    THREE_STEPS,
    make_member,
    make_organization,
    make_published_workflow,
)


@pytest.fixture(scope="session")
def embedded_postgres():
    cfg = config.load()
    started = pg.start(cfg) if cfg.embedded else False
    yield cfg
    if started:
        from django.db import connections

        connections.close_all()
        pg.stop(cfg)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(embedded_postgres):
    """pytest-django hook: runs before the test database is created."""


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """The test database is new: give the application role its data privileges there, as
    `flowpilot db start` does for the real one, so tests can run queries as that role."""
    from django.db import connection

    with django_db_blocker.unblock(), connection.cursor() as cursor:
        for statement in pg.app_role_grants():
            cursor.execute(statement)


@pytest.fixture
def as_app_role(db):
    """Run the rest of the test as the application role (no BYPASSRLS): row-level security
    applies to every query from here on, as in production."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL ROLE {config.APP_ROLE}")
    yield
    with connection.cursor() as cursor:
        cursor.execute("RESET ROLE")


def bearer_token(user) -> str:
    """A signed-in API session for `user`, as login makes one."""
    return session_create(user=user, kind="api", ip="127.0.0.1", user_agent="pytest")[1]


@pytest.fixture
def echo_server():
    with EchoServer() as server:
        yield server


@pytest.fixture
def org(db):
    return make_organization("acme")


@pytest.fixture
def other_org(db):
    return make_organization("globex")


@pytest.fixture
def user(org):
    return make_member(org, "alice@acme.test")


@pytest.fixture
def api(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {bearer_token(user)}")
    return client


@pytest.fixture
def outsider_api(other_org):
    """A member of another organization."""
    client = APIClient()
    outsider = make_member(other_org, "mallory@globex.test")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {bearer_token(outsider)}")
    return client


@pytest.fixture
def published(org, user):
    return make_published_workflow(org, user, THREE_STEPS)
