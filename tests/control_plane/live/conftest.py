"""Fixtures of the live-update WebSocket tests: a channel layer per test, acme's bearer token
and execution, and globex's member and execution for the cross-tenant cases."""

from __future__ import annotations

import pytest
from channels.layers import channel_layers

from control_plane.executions.models import WorkflowExecution
from tests.conftest import bearer_token
from tests.control_plane.live.support import new_execution
from tests.factories import THREE_STEPS, make_member, make_published_workflow


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """A channel layer per test: its queues belong to the test's event loop."""
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def token(user) -> str:
    return bearer_token(user)


@pytest.fixture
def execution(published) -> WorkflowExecution:
    return new_execution(published)


@pytest.fixture
def mallory(other_org):
    return make_member(other_org, "mallory@globex.test")


@pytest.fixture
def globex_execution(other_org, mallory) -> WorkflowExecution:
    return new_execution(make_published_workflow(other_org, mallory, THREE_STEPS, slug="theirs"))
