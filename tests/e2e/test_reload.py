"""Reloading the code location under load, as real processes: `flowpilot up` with two code
locations (FLOWPILOT_CODE_SHARDS=2), driven through the HTTP API and Dagster's GraphQL API.

Publishing a new version while a run of the old one is in flight reloads only the
organization's location; the job shows the new version without a restart and the old run
finishes. Pausing takes the job out of the location; the run in flight finishes too."""

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
from flowpilot.shards import location_name, shard_of
from tests.e2e.support import start_up, wait_execution, wait_step_running

pytestmark = pytest.mark.slow

SHARDS = 2
SLOW_SECONDS = 12


def _workflow(greeting: str) -> dict:
    return {
        "inputs": {"url": {"type": "string"}},
        "steps": [
            {"id": "compose", "type": "transform.template", "config": {"template": greeting}},
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
        ],
    }


WORKSPACE = """
{ workspaceOrError { ... on Workspace { locationEntries {
    name loadStatus updatedTimestamp
    locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""

JOB = """
query Job($selector: PipelineSelector!) {
  pipelineOrError(params: $selector) { __typename ... on Pipeline { tags { key value } } }
}
"""


class Dagster:
    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=30)

    def query(self, query: str, variables: dict | None = None) -> dict:
        body = self.client.post("/graphql", json={"query": query, "variables": variables or {}})
        data = body.json()
        assert not data.get("errors"), data
        return data["data"]

    def locations(self) -> dict[str, dict]:
        entries = self.query(WORKSPACE)["workspaceOrError"]["locationEntries"]
        return {entry["name"]: entry for entry in entries}

    def job_version(self, location: str, job: str) -> int | None:
        selector = {
            "repositoryLocationName": location,
            "repositoryName": "flowpilot",
            "pipelineName": job,
        }
        found = self.query(JOB, {"selector": selector})["pipelineOrError"]
        if found["__typename"] != "Pipeline":
            return None
        return int({t["key"]: t["value"] for t in found["tags"]}["flowpilot/version"])

    def wait_job_version(self, location: str, job: str, version: int | None, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.job_version(location, job) == version:
                return time.monotonic()
            time.sleep(0.2)
        raise AssertionError(f"{job} in {location} is not at version {version} in {timeout}s")

    def run_status(self, run_id: str) -> str:
        query = "query Run($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"
        return self.query(query, {"id": run_id})["runOrError"]["status"]


def test_publish_and_pause_reload_one_location_and_runs_in_flight_finish(fresh_env):
    env = {**fresh_env, "FLOWPILOT_CODE_SHARDS": str(SHARDS)}
    flowpilot = os.path.join(os.path.dirname(sys.executable), "flowpilot")
    up = start_up(env)
    try:
        seed = json.loads(
            subprocess.run(
                [flowpilot, "seed", "--json"], env=env, capture_output=True, text=True, check=True
            ).stdout
        )
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{env['FLOWPILOT_PORT']}",
            headers={"Authorization": f"Bearer {seed['token']}"},
            timeout=10,
        )
        dagster = Dagster(f"http://127.0.0.1:{env['FLOWPILOT_DAGSTER_PORT']}")
        ours = location_name(shard_of(seed["organization"], SHARDS), SHARDS)
        other = location_name(1 - shard_of(seed["organization"], SHARDS), SHARDS)
        # Both locations are loaded; the demo organization's workflow is only in its own.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            locations = dagster.locations()
            if set(locations) == {ours, other} and all(
                entry["locationOrLoadError"]["__typename"] == "RepositoryLocation"
                for entry in locations.values()
            ):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"locations not loaded: {dagster.locations()}")
        assert dagster.job_version(ours, "demo__hello_flowpilot") is not None
        assert dagster.job_version(other, "demo__hello_flowpilot") is None

        created = client.post(
            "/api/v1/workflows", json={"name": "Reloaded", "definition": _workflow("v1")}
        )
        assert created.status_code == 201, created.text
        workflow_id = created.json()["id"]
        assert client.post(f"/api/v1/workflows/{workflow_id}/publish", json={}).status_code == 201
        dagster.wait_job_version(ours, "demo__reloaded", 1, timeout=120)

        with EchoServer() as echo:
            slow = {"inputs": {"url": f"{echo.url}/sleep/{SLOW_SECONDS}"}}
            # A run of version 1 is in its slow step when version 2 is published.
            first = client.post(f"/api/v1/workflows/{workflow_id}/run", json=slow).json()
            wait_step_running(client, first["id"], "send", timeout=120)
            other_before = dagster.locations()[other]["updatedTimestamp"]
            ours_before = dagster.locations()[ours]["updatedTimestamp"]
            patched = client.patch(
                f"/api/v1/workflows/{workflow_id}", json={"definition": _workflow("v2")}
            )
            assert patched.status_code == 200, patched.text
            assert (
                client.post(f"/api/v1/workflows/{workflow_id}/publish", json={}).status_code == 201
            )
            dagster.wait_job_version(ours, "demo__reloaded", 2, timeout=120)
            locations = dagster.locations()
            assert locations[ours]["updatedTimestamp"] > ours_before
            assert locations[other]["updatedTimestamp"] == other_before  # not reloaded
            assert client.get(f"/api/v1/executions/{first['id']}").json()["status"] == "running"

            # A run of version 2 is in flight when the workflow is paused.
            second = client.post(f"/api/v1/workflows/{workflow_id}/run", json=slow).json()
            wait_step_running(client, second["id"], "send", timeout=120)
            paused = client.patch(f"/api/v1/workflows/{workflow_id}", json={"status": "paused"})
            assert paused.status_code == 200, paused.text
            dagster.wait_job_version(ours, "demo__reloaded", None, timeout=120)

            done = [wait_execution(client, e["id"], timeout=120) for e in (first, second)]
        assert [(e["status"], e["version"]) for e in done] == [("success", 1), ("success", 2)]
        steps = [{s["step_id"]: s for s in e["steps"]} for e in done]
        assert [s["compose"]["output"] for s in steps] == [{"result": "v1"}, {"result": "v2"}]
        assert [s["send"]["status"] for s in steps] == ["success", "success"]
        assert [dagster.run_status(e["dagster_run_id"]) for e in done] == ["SUCCESS", "SUCCESS"]
        # A paused workflow does not run; resuming puts the job back.
        assert client.post(f"/api/v1/workflows/{workflow_id}/run", json=slow).status_code == 409
        resumed = client.patch(f"/api/v1/workflows/{workflow_id}", json={"status": "active"})
        assert resumed.status_code == 200, resumed.text
        dagster.wait_job_version(ours, "demo__reloaded", 2, timeout=120)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGINT)
        code = up.wait(timeout=90)
    assert code == 0
