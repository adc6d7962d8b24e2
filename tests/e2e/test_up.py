"""The whole system as real processes: `flowpilot up` (embedded Postgres, control plane under
uvicorn, `dagster dev` with its daemon and code server), driven only through the HTTP API."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from flowpilot.echo_server import EchoServer
from tests.e2e.support import (
    FLOWPILOT,
    GREET,
    seed_token,
    start_up,
    wait_execution,
    wait_step_running,
)

pytestmark = pytest.mark.slow


def test_trigger_through_the_api_reaches_success(fresh_env):
    up = start_up(fresh_env)
    try:
        base = f"http://127.0.0.1:{fresh_env['FLOWPILOT_PORT']}"
        client = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {seed_token(fresh_env)}"}, timeout=10
        )
        assert client.get("/readyz").json()["status"] == "ready"
        # FlowPilot's code server, reached over a Unix socket (no free-port race).
        workspace = Path(fresh_env["FLOWPILOT_HOME"]) / "dagster" / "workspace-code-servers.yaml"
        assert "socket: " in workspace.read_text() and "port: " not in workspace.read_text()

        created = client.post("/api/v1/workflows", json={"name": "E2E greet", "definition": GREET})
        assert created.status_code == 201, created.text
        workflow_id = created.json()["id"]
        published = client.post(f"/api/v1/workflows/{workflow_id}/publish", json={})
        assert published.status_code == 201, published.text

        with EchoServer() as echo:
            started = time.monotonic()
            run = client.post(
                f"/api/v1/workflows/{workflow_id}/run",
                json={"inputs": {"name": "e2e", "url": f"{echo.url}/in"}},
            )
            assert run.status_code == 202, run.text
            execution = wait_execution(client, run.json()["id"], timeout=120)
            elapsed = time.monotonic() - started

            # Cancel from the control plane while the HTTP step waits on a slow endpoint:
            # Dagster terminates the run and the run-status sensor records it.
            slow = client.post(
                f"/api/v1/workflows/{workflow_id}/run",
                json={"inputs": {"name": "slow", "url": f"{echo.url}/sleep/60"}},
            ).json()
            wait_step_running(client, slow["id"], "send", timeout=120)
            cancel = client.post(f"/api/v1/executions/{slow['id']}/cancel")
            assert cancel.status_code == 202, cancel.text
            canceled = wait_execution(client, slow["id"], timeout=60)
            assert canceled["status"] == "canceled", canceled
        assert execution["status"] == "success", execution
        assert execution["dagster_run_id"]
        steps = {s["step_id"]: s for s in execution["steps"]}
        assert [s["status"] for s in steps.values()] == ["success"] * 3
        assert steps["report"]["output"] == {"result": "Hi e2e (200)"}
        assert elapsed < 120

        # The same run is an ordinary Dagster run, visible through Dagster's own API.
        dagster = f"http://127.0.0.1:{fresh_env['FLOWPILOT_DAGSTER_PORT']}/graphql"
        query = '{ runOrError(runId: "%s") { ... on Run { status jobName tags { key value } } } }'
        run_info = httpx.post(
            dagster, json={"query": query % execution["dagster_run_id"]}, timeout=10
        ).json()
        run_data = run_info["data"]["runOrError"]
        assert run_data["status"] == "SUCCESS" and run_data["jobName"] == "demo__e2e_greet"
        tags = {t["key"]: t["value"] for t in run_data["tags"]}
        assert tags["flowpilot/org"] == "demo" and tags["flowpilot/execution"] == str(
            execution["id"]
        )
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        code = up.wait(timeout=90)
    assert code == 0
    # Ctrl-C stopped everything: no process of the group is left, the database is down.
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.killpg(up.pid, 0)
    status = subprocess.run(
        [FLOWPILOT, "db", "status"], env=fresh_env, capture_output=True, text=True
    )
    assert status.returncode == 3, status.stdout
