"""`make demo` runs `flowpilot demo`: here on a clean FLOWPILOT_HOME, twice (idempotent)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end_twice(fresh_env):
    flowpilot = os.path.join(os.path.dirname(sys.executable), "flowpilot")
    for _ in range(2):
        result = subprocess.run(
            [flowpilot, "demo"], env=fresh_env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        assert "SUCCESS" in out, out
        assert "Dagster run id:" in out
        for step in ("compose", "call", "report"):
            assert step in out
        assert "200: Hello, FlowPilot demo!" in out
        assert "/runs/" in out
    # Nothing left running: the demo stops the database and Dagster it started.
    status = subprocess.run(
        [flowpilot, "db", "status"], env=fresh_env, capture_output=True, text=True
    )
    assert status.returncode == 3
