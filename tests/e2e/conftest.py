"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import pytest

from tests.e2e.support import flowpilot_env, stop_database


@pytest.fixture
def fresh_env(tmp_path):
    """Environment for a whole FlowPilot installation of its own: home, database, ports."""
    env = flowpilot_env(tmp_path / "home")
    yield env
    # Whatever happened, leave no server behind.
    stop_database(env)
