"""Fixtures of the organization API tests."""

from __future__ import annotations

import pytest
from django.db import connection

from flowpilot import config
from tests.control_plane.organizations.support import _client
from tests.factories import make_member


@pytest.fixture
def api(user):
    """Alice, the owner of acme (a checked client)."""
    return _client(user)


@pytest.fixture(params=["owner_role", "app_role"])
def database_role(request, api, org):
    """Run the test twice: as the test database's owner, then as the application role, so
    PostgreSQL row-level security applies to every query the requests make."""
    if request.param == "app_role":
        request.getfixturevalue("as_app_role")
        with connection.cursor() as cursor:
            cursor.execute("SELECT rolname, rolbypassrls FROM pg_roles WHERE rolname = user")
            assert cursor.fetchone() == (config.APP_ROLE, False)
    return request.param


@pytest.fixture
def team(org):
    """bob (editor) and carol (viewer) join alice (owner) in acme."""
    make_member(org, "bob@acme.test", "editor")
    make_member(org, "carol@acme.test", "viewer")
