"""The whole system as real processes: `flowpilot up` (embedded Postgres, control plane under
uvicorn, `dagster dev` with its daemon and code server), driven only through the HTTP API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from flowpilot.echo_server import EchoServer

pytestmark = pytest.mark.slow

WORKFLOW = {
    "inputs": {"name": {"type": "string"}, "url": {"type": "string"}},
    "steps": [
        {
            "id": "compose",
            "type": "transform.template",
            "config": {"template": "Hi {{ inputs.name }}"},
        },
        {
            "id": "send",
            "type": "http.request",
            "after": ["compose"],
            "config": {
                "url": "{{ inputs.url }}",
                "method": "POST",
                "json_body": {"text": "{{ steps.compose.output.result }}"},
            },
        },
        {
            "id": "report",
            "type": "transform.template",
            "after": ["send"],
            "config": {
                "template": "{{ steps.send.output.body.echo.text }}"
                " ({{ steps.send.output.status_code }})"
            },
        },
    ],
}


def _read_until(process: subprocess.Popen, marker: str, timeout: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    os.set_blocking(process.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line:
            lines.append(line.rstrip())
            if marker in line:
                return lines
        elif process.poll() is not None:
            break
        else:
            time.sleep(0.1)
    raise AssertionError(f"no {marker!r} within {timeout}s:\n" + "\n".join(lines[-40:]))


def _wait_execution(client: httpx.Client, execution_id: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/executions/{execution_id}").json()
        if body["status"] in ("success", "failure", "canceled"):
            return body
        time.sleep(0.5)
    raise AssertionError(f"execution {execution_id} not finished in {timeout}s: {body}")


def _wait_step_running(client: httpx.Client, execution_id: int, step: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = client.get(f"/api/v1/executions/{execution_id}").json()["steps"]
        if any(s["step_id"] == step and s["status"] == "running" for s in steps):
            return
        time.sleep(0.2)
    raise AssertionError(f"step {step} of execution {execution_id} not running in {timeout}s")


def test_trigger_through_the_api_reaches_success(fresh_env):
    flowpilot = os.path.join(os.path.dirname(sys.executable), "flowpilot")
    up = subprocess.Popen(
        [flowpilot, "up"],
        env=fresh_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        _read_until(up, "FlowPilot is up", timeout=180)
        seed = json.loads(
            subprocess.run(
                [flowpilot, "seed", "--json"],
                env=fresh_env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        base = f"http://127.0.0.1:{fresh_env['FLOWPILOT_PORT']}"
        client = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {seed['token']}"}, timeout=10
        )
        assert client.get("/readyz").json()["status"] == "ready"

        created = client.post(
            "/api/v1/workflows", json={"name": "E2E greet", "definition": WORKFLOW}
        )
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
            execution = _wait_execution(client, run.json()["id"], timeout=120)
            elapsed = time.monotonic() - started

            # Cancel from the control plane while the HTTP step waits on a slow endpoint:
            # Dagster terminates the run and the run-status sensor records it.
            slow = client.post(
                f"/api/v1/workflows/{workflow_id}/run",
                json={"inputs": {"name": "slow", "url": f"{echo.url}/sleep/60"}},
            ).json()
            _wait_step_running(client, slow["id"], "send", timeout=120)
            cancel = client.post(f"/api/v1/executions/{slow['id']}/cancel")
            assert cancel.status_code == 202, cancel.text
            canceled = _wait_execution(client, slow["id"], timeout=60)
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
        [flowpilot, "db", "status"], env=fresh_env, capture_output=True, text=True
    )
    assert status.returncode == 3, status.stdout
