"""Re-runs through the whole system (`flowpilot up`: embedded Postgres, the control plane under
uvicorn, `dagster dev` with its daemon), driven over HTTP only:

- a run whose HTTP step fails the first time (the local server answers 503 once) is re-run
  from the control plane from its failure: the new execution succeeds, the step that had
  succeeded is not called again and is recorded with its old output, and the log says so;
- a run re-executed through Dagster's GraphQL directly, as the Dagster UI does, becomes an
  execution linked to its parent by `rerun_of`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from flowpilot.echo_server import EchoServer

pytestmark = pytest.mark.slow

RUN_TIMEOUT = 120.0
FLAKY = {
    "inputs": {"base": {"type": "string"}},
    "steps": [
        {
            "id": "ping",
            "type": "http.request",
            "config": {"url": "{{ inputs.base }}/flaky/ping/0"},  # always 200; counts calls
        },
        {
            "id": "send",
            "type": "http.request",
            "after": ["ping"],
            "config": {
                "url": "{{ inputs.base }}/flaky/send/1",  # 503 the first time, then 200
                "method": "POST",
                "json_body": {"ping": "{{ steps.ping.output.status_code }}"},
            },
        },
        {
            "id": "report",
            "type": "transform.template",
            "after": ["send"],
            "config": {"template": "{{ steps.send.output.body.echo.ping }}"},
        },
    ],
}
# What the Dagster UI sends for "Re-execute" (it keeps the parent run's tags).
UI_REEXECUTE = """
mutation($params: ReexecutionParams!) {
  launchRunReexecution(reexecutionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""
RUN_TAGS = '{ runOrError(runId: "%s") { ... on Run { status tags { key value } } } }'


def _tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _wait_up(process: subprocess.Popen, output: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "FlowPilot is up" in output.read_text(errors="replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError("flowpilot up did not come up:\n" + _tail(output))


def _wait_execution(client: httpx.Client, execution_id: int) -> dict:
    deadline = time.monotonic() + RUN_TIMEOUT
    body: dict = {}
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/executions/{execution_id}").json()
        if body["status"] in ("success", "failure", "canceled"):
            return body
        time.sleep(0.5)
    raise AssertionError(f"execution {execution_id} not finished in {RUN_TIMEOUT}s: {body}")


def _wait_execution_of_run(client: httpx.Client, run_id: str) -> dict:
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        for execution in client.get("/api/v1/executions?page_size=50").json()["results"]:
            if execution["dagster_run_id"] == run_id:
                return _wait_execution(client, execution["id"])
        time.sleep(0.5)
    raise AssertionError(f"no execution for Dagster run {run_id} in {RUN_TIMEOUT}s")


def _log(client: httpx.Client, execution_id: int) -> list[str]:
    body = client.get(f"/api/v1/executions/{execution_id}/logs?page_size=200").json()
    return [line["message"] for line in body["results"]]


def _run_tags(dagster: str, run_id: str) -> dict[str, str]:
    answer = httpx.post(dagster, json={"query": RUN_TAGS % run_id}, timeout=10).json()
    return {tag["key"]: tag["value"] for tag in answer["data"]["runOrError"]["tags"]}


def test_rerun_from_failure_and_from_the_dagster_ui(fresh_env, tmp_path):
    flowpilot = os.path.join(os.path.dirname(sys.executable), "flowpilot")
    output = tmp_path / "up.log"  # the processes' output, quoted when something fails
    with output.open("w") as sink:
        up = subprocess.Popen(
            [flowpilot, "up"],
            env=fresh_env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    try:
        _wait_up(up, output, timeout=240)
        seed = json.loads(
            subprocess.run(
                [flowpilot, "seed", "--json"],
                env=fresh_env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{fresh_env['FLOWPILOT_PORT']}",
            headers={"Authorization": f"Bearer {seed['token']}"},
            timeout=30,
        )
        dagster = f"http://127.0.0.1:{fresh_env['FLOWPILOT_DAGSTER_PORT']}/graphql"
        created = client.post("/api/v1/workflows", json={"name": "Flaky", "definition": FLAKY})
        assert created.status_code == 201, created.text
        workflow_id = created.json()["id"]
        published = client.post(f"/api/v1/workflows/{workflow_id}/publish", json={})
        assert published.status_code == 201, published.text

        with EchoServer() as echo:
            run = client.post(
                f"/api/v1/workflows/{workflow_id}/run", json={"inputs": {"base": echo.url}}
            )
            assert run.status_code == 202, run.text
            parent = _wait_execution(client, run.json()["id"])
            assert parent["status"] == "failure", parent
            parent_steps = {s["step_id"]: s for s in parent["steps"]}
            assert [parent_steps[s]["status"] for s in ("ping", "send", "report")] == [
                "success",
                "failure",
                "skipped",
            ]
            assert any(m.startswith("step 'send' failed: POST") for m in _log(client, parent["id"]))

            # From the control plane, from the failure.
            again = client.post(
                f"/api/v1/executions/{parent['id']}/rerun", json={"strategy": "from_failure"}
            )
            assert again.status_code == 202, again.text
            assert again.json()["rerun_of"] == parent["id"]
            assert again.json()["rerun_strategy"] == "from_failure"
            rerun = _wait_execution(client, again.json()["id"])
            assert rerun["status"] == "success", rerun
            assert rerun["dagster_run_id"] and rerun["dagster_run_id"] != parent["dagster_run_id"]
            steps = {s["step_id"]: s for s in rerun["steps"]}
            assert [steps[s]["status"] for s in ("ping", "send", "report")] == ["success"] * 3
            assert steps["ping"]["attempts"] == 0
            assert steps["ping"]["output"] == parent_steps["ping"]["output"]
            assert steps["report"]["output"] == {"result": 200}
            assert echo.calls == {"ping": 1, "send": 2}  # ping was not called again
            log = _log(client, rerun["id"])
            assert log[0] == f"run started (Dagster run {rerun['dagster_run_id']})"
            assert (
                f"step 'ping' reused from execution {parent['id']} (its output taken over), "
                "not run again"
            ) in log
            assert log[-1] == "run succeeded"
            tags = _run_tags(dagster, rerun["dagster_run_id"])
            assert tags["flowpilot/execution"] == str(rerun["id"])
            assert tags["dagster/parent_run_id"] == parent["dagster_run_id"]
            assert tags["flowpilot/event"] != _run_tags(dagster, parent["dagster_run_id"]).get(
                "flowpilot/event"
            )
            refused = client.post(
                f"/api/v1/executions/{rerun['id']}/rerun", json={"strategy": "from_failure"}
            )
            assert refused.status_code == 409, refused.text

            # From Dagster itself, as its UI re-executes a run: every step, the parent's tags.
            answer = httpx.post(
                dagster,
                json={
                    "query": UI_REEXECUTE,
                    "variables": {
                        "params": {
                            "parentRunId": parent["dagster_run_id"],
                            "strategy": "ALL_STEPS",
                        }
                    },
                },
                timeout=30,
            ).json()["data"]["launchRunReexecution"]
            assert answer["__typename"] == "LaunchRunSuccess", answer
            ui_run = answer["run"]["runId"]
            from_ui = _wait_execution_of_run(client, ui_run)
            assert from_ui["status"] == "success", from_ui
            assert from_ui["id"] not in (parent["id"], rerun["id"])
            assert (from_ui["rerun_of"], from_ui["rerun_strategy"]) == (parent["id"], "all")
            assert [s["attempts"] for s in from_ui["steps"]] == [1, 1, 1]
            assert echo.calls == {"ping": 2, "send": 3}
            # The parent was left as it ended.
            assert client.get(f"/api/v1/executions/{parent['id']}").json()["status"] == "failure"
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- flowpilot up, last lines:\n{_tail(output)}") from None
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGINT)
        up.wait(timeout=90)
