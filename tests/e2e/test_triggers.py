"""Every kind of trigger through the whole system: one `flowpilot up` (embedded Postgres, the
control plane under uvicorn, `dagster dev` with its daemon) on a fresh FLOWPILOT_HOME with its own
ports, shared by the tests of this module and driven only over HTTP (the control plane's API,
the webhook URL, Dagster's GraphQL).

- manual: `POST .../workflows/{id}/run`;
- webhook: `POST /hooks/{token}`, unsigned and HMAC-signed;
- event: a workflow listening to `workflow.succeeded` starts when another one succeeds;
- schedule: a schedule trigger (cron and IANA time zone) fired by the real Dagster daemon;
- a run launched straight from Dagster (GraphQL `launchRun`, no FlowPilot tags) becomes an
  execution;
- the organization's `concurrent_runs` quota (2) holds five triggered runs to two at a time.

The schedule's trigger is made when the system is up, so its first tick (Dagster's scheduler
wakes on minute boundaries: the first tick falls 60-120 s after the schedule appears) comes
while the other tests run; its test waits for whatever is left."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from orchestration.steps.definition import job_name_for
from tests.e2e.support import FINISHED, GREET, ORG, RUN_TIMEOUT, System, flowpilot_up

pytestmark = pytest.mark.slow

QUOTA_ORG = "e2e-quota"
# Dagster run statuses that hold a slot of the run queue (QueuedRunCoordinator's in-progress).
IN_PROGRESS = ("STARTING", "STARTED", "CANCELING")

FOLLOW_UP = {
    "inputs": {"note": {"type": "string", "default": "after"}},
    "steps": [
        {"id": "note", "type": "transform.template", "config": {"template": "{{ inputs.note }}"}},
        {
            "id": "shout",
            "type": "transform.template",
            "after": ["note"],
            "config": {"template": "{{ steps.note.output.result | upper }}"},
        },
    ],
}

# ~2 s per run in its middle step: the echo server sleeps before it answers.
SLOW = {
    "inputs": {"url": {"type": "string"}},
    "steps": [
        {"id": "begin", "type": "transform.template", "config": {"template": "go"}},
        {
            "id": "wait",
            "type": "http.request",
            "after": ["begin"],
            "config": {"url": "{{ inputs.url }}"},
        },
        {
            "id": "end",
            "type": "transform.template",
            "after": ["wait"],
            "config": {"template": "{{ steps.wait.output.status_code }}"},
        },
    ],
}

SCHEDULE_ZONE = "Asia/Kathmandu"  # UTC+05:45: an hour field in UTC never matches its hours


# -- the system ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def system(tmp_path_factory) -> Iterator[System]:
    with flowpilot_up(tmp_path_factory.mktemp("triggers") / "home") as running:
        yield running


def _assert_steps(execution: dict, expected: dict[str, str]) -> dict[str, dict]:
    steps = {s["step_id"]: s for s in execution["steps"]}
    assert {k: s["status"] for k, s in steps.items()} == expected, execution
    for step in steps.values():
        if step["status"] == "success":
            assert step["started_at"] and step["finished_at"], step
    return steps


def _greet_ok(system: System, execution: dict, name: str) -> None:
    assert execution["status"] == "success", execution
    assert execution["dagster_run_id"], execution
    steps = _assert_steps(execution, {"compose": "success", "send": "success", "report": "success"})
    assert steps["report"]["output"] == {"result": f"Hi {name} (200)"}


def _parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


# -- fixtures for the workflows ------------------------------------------------------------------


@pytest.fixture(scope="module")
def schedule(system: System) -> dict:
    """A workflow on a schedule trigger, made as soon as the system is up (see the docstring)."""
    workflow = system.publish("E2E scheduled", FOLLOW_UP)
    now = datetime.now(ZoneInfo(SCHEDULE_ZONE))
    hours = sorted({now.hour, (now + timedelta(minutes=5)).hour})
    cron = f"* {','.join(map(str, hours))} * * *"
    trigger = system.trigger(
        workflow["id"],
        {"kind": "schedule", "cron": cron, "timezone": SCHEDULE_ZONE, "inputs": {"note": "tick"}},
    )
    assert trigger["cron"] == cron and trigger["timezone"] == SCHEDULE_ZONE, trigger
    return {"workflow": workflow, "trigger": trigger, "made_at": time.monotonic(), "cron": cron}


@pytest.fixture(scope="module")
def greet(system: System, schedule: dict) -> dict:
    return system.publish("E2E greet", GREET)


# -- the tests -----------------------------------------------------------------------------------


def test_manual_run(system: System, greet: dict):
    run = system.api.post(
        system.path(f"workflows/{greet['id']}/run"),
        json={"inputs": {"name": "manual", "url": f"{system.echo.url}/in"}},
    )
    assert run.status_code == 202, run.text
    execution = system.wait_finished(run.json()["id"])
    _greet_ok(system, execution, "manual")
    info = system.run_info(execution["dagster_run_id"])
    assert info["status"] == "SUCCESS", info
    tags = {t["key"]: t["value"] for t in info["tags"]}
    assert tags["flowpilot/execution"] == str(execution["id"])
    assert tags["flowpilot/event"] == str(execution["trigger_event"])


def test_webhook_unsigned_and_signed(system: System, greet: dict):
    plain = system.trigger(greet["id"], {"kind": "webhook", "name": "plain"})
    signed = system.trigger(greet["id"], {"kind": "webhook", "name": "signed", "signing": True})
    assert plain["url"].startswith(f"{system.base}/hooks/") and not plain["signed"]
    secret = signed["signing_secret"]

    body = {"inputs": {"name": "hook", "url": f"{system.echo.url}/in"}}
    answer = httpx.post(plain["url"], json=body, timeout=30)
    assert answer.status_code == 202, answer.text
    unsigned_execution = answer.json()["execution_id"]

    raw = json.dumps({"inputs": {"name": "signed hook", "url": f"{system.echo.url}/in"}}).encode()
    headers = {"Content-Type": "application/json"}
    wrong = httpx.post(
        signed["url"],
        content=raw,
        headers={**headers, "X-FlowPilot-Signature": "sha256=" + "0" * 64},
    )
    assert wrong.status_code == 401, wrong.text
    assert wrong.json()["error"]["code"] == "invalid_signature"
    missing = httpx.post(signed["url"], content=raw, headers=headers)
    assert missing.status_code == 401, missing.text
    signature = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    good = httpx.post(
        signed["url"], content=raw, headers={**headers, "X-FlowPilot-Signature": signature}
    )
    assert good.status_code == 202, good.text
    assert set(good.json()) >= {"event_id", "execution_id"}

    _greet_ok(system, system.wait_finished(unsigned_execution), "hook")
    signed_execution = system.wait_finished(good.json()["execution_id"])
    _greet_ok(system, signed_execution, "signed hook")
    assert signed_execution["trigger_event"] == good.json()["event_id"]
    # Refused requests started nothing: two webhook executions, from the two accepted calls.
    ids = {e["id"] for e in system.executions(greet["id"])}
    assert {unsigned_execution, signed_execution["id"]} <= ids
    for trigger in (plain, signed):
        read = system.api.get(system.path(f"workflows/{greet['id']}/triggers/{trigger['id']}"))
        assert read.json()["last_triggered_at"], read.json()


def test_event_trigger_follows_another_workflow(system: System, greet: dict):
    follower = system.publish("E2E follower", FOLLOW_UP)
    listening = system.trigger(
        follower["id"],
        {"kind": "event", "event_type": "workflow.succeeded", "inputs": {"note": "greeted"}},
    )
    try:
        run = system.api.post(
            system.path(f"workflows/{greet['id']}/run"),
            json={"inputs": {"name": "source", "url": f"{system.echo.url}/in"}},
        )
        assert run.status_code == 202, run.text
        source = system.wait_finished(run.json()["id"])
        _greet_ok(system, source, "source")
        source_end = _parse(source["finished_at"])

        # The follower's execution is written in the same transaction that finished the source
        # (so: created at its finish). Other workflows of the organization succeeding meanwhile
        # (the schedule) may start more; this is the one of the source.
        def started_by_source() -> dict | None:
            for execution in system.executions(follower["id"]):
                created = _parse(execution["created_at"])
                if source_end <= created <= source_end + timedelta(seconds=2):
                    return execution
            return None

        follow = system.wait(started_by_source, 30, lambda: "no follower execution")
        done = system.wait_finished(follow["id"])
        assert done["status"] == "success", done
        steps = _assert_steps(done, {"note": "success", "shout": "success"})
        assert steps["shout"]["output"] == {"result": "GREETED"}
    finally:
        off = system.api.patch(
            system.path(f"workflows/{follower['id']}/triggers/{listening['id']}"),
            json={"enabled": False},
        )
        assert off.status_code == 200, off.text


def _job_selector(system: System, job_name: str) -> dict:
    query = """{ repositoriesOrError { __typename ... on RepositoryConnection {
        nodes { name location { name } jobs { name } } } } }"""

    def find() -> dict | None:
        for repo in system.graphql(query)["repositoriesOrError"].get("nodes", []):
            if any(job["name"] == job_name for job in repo["jobs"]):
                return {
                    "repositoryLocationName": repo["location"]["name"],
                    "repositoryName": repo["name"],
                    "jobName": job_name,
                }
        return None

    return system.wait(find, 60, lambda: f"job {job_name} not in Dagster's workspace")


def test_run_launched_from_dagster_becomes_an_execution(system: System, greet: dict):
    job_name = job_name_for(ORG, greet["slug"])
    launch = """mutation Launch($params: ExecutionParams!) { launchRun(executionParams: $params) {
        __typename ... on LaunchRunSuccess { run { runId tags { key value } } }
        ... on PythonError { message }
        ... on RunConfigValidationInvalid { errors { message } } } }"""
    params = {
        "selector": _job_selector(system, job_name),
        "runConfigData": {"inputs": {"name": "dagster ui", "url": f"{system.echo.url}/in"}},
    }
    result = system.graphql(launch, {"params": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    run_id = result["run"]["runId"]
    assert not [
        t for t in result["run"]["tags"] if t["key"] in ("flowpilot/execution", "flowpilot/event")
    ]

    def execution_of_run() -> dict | None:
        for execution in system.executions(greet["id"]):
            if execution["dagster_run_id"] == run_id:
                return execution
        return None

    found = system.wait(execution_of_run, RUN_TIMEOUT, lambda: f"no execution for run {run_id}")
    execution = system.wait_finished(found["id"])
    _greet_ok(system, execution, "dagster ui")
    assert execution["trigger_event"] is None  # started in Dagster, not by a FlowPilot trigger
    assert execution["inputs"] == {"name": "dagster ui", "url": f"{system.echo.url}/in"}
    assert system.run_info(run_id)["status"] == "SUCCESS"


def test_concurrent_runs_quota_holds_five_runs_to_two(system: System):
    created = system.api.post("/api/v1/orgs", json={"name": "E2E quota", "slug": QUOTA_ORG})
    assert created.status_code == 201, created.text
    quota = system.api.patch(system.path("quota", QUOTA_ORG), json={"concurrent_runs": 2})
    assert quota.status_code == 200, quota.text
    assert quota.json()["limits"]["concurrent_runs"] == 2
    workflow = system.publish("E2E slow", SLOW, org=QUOTA_ORG)
    hook = system.trigger(workflow["id"], {"kind": "webhook"}, org=QUOTA_ORG)

    samples: list[tuple[float, int, int]] = []  # (time, runs in progress, runs finished)
    stop = threading.Event()
    runs_query = """query Runs($filter: RunsFilter) { runsOrError(filter: $filter) {
        ... on Runs { results { runId status startTime endTime } } } }"""
    org_filter = {"filter": {"tags": [{"key": "flowpilot/org", "value": QUOTA_ORG}]}}

    def sample() -> None:
        while not stop.is_set():
            runs = system.graphql(runs_query, org_filter)["runsOrError"]["results"]
            in_progress = sum(r["status"] in IN_PROGRESS for r in runs)
            done = sum(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs)
            samples.append((time.monotonic(), in_progress, done))
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        executions = []
        for index in range(5):
            body = {"inputs": {"url": f"{system.echo.url}/sleep/2"}, "n": index}
            answer = httpx.post(hook["url"], json=body, timeout=30)
            assert answer.status_code == 202, answer.text
            executions.append(answer.json()["execution_id"])
        finished = [system.wait_finished(e, org=QUOTA_ORG, timeout=240) for e in executions]
    finally:
        stop.set()
        sampler.join(timeout=30)
    for execution in finished:
        assert execution["status"] == "success", execution
        _assert_steps(execution, {"begin": "success", "wait": "success", "end": "success"})
    assert samples, "no sample of Dagster's runs"
    assert max(n for _, n, _ in samples) == 2, samples  # two at once, never three
    # The same from the runs' own start and end times: never three overlapping.
    runs = [system.run_info(e["dagster_run_id"]) for e in finished]
    edges = sorted(
        [(r["startTime"], 1) for r in runs] + [(r["endTime"], -1) for r in runs],
        key=lambda edge: (edge[0], edge[1]),  # an end before a start at the same instant
    )
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert peak == 2, runs
    # Each run spent its ~2 s in the slow step.
    for execution in finished:
        wait = {s["step_id"]: s for s in execution["steps"]}["wait"]
        assert (_parse(wait["finished_at"]) - _parse(wait["started_at"])).total_seconds() >= 1.9


def test_schedule_fired_by_the_daemon(system: System, schedule: dict):
    workflow, trigger = schedule["workflow"], schedule["trigger"]
    # First tick: the next minute boundary after the scheduler first sees the schedule, which
    # is up to a minute after it was made; then the run itself.
    left = max(30.0, 210.0 - (time.monotonic() - schedule["made_at"]))

    def first_success() -> dict | None:
        for execution in system.executions(workflow["id"]):
            if execution["status"] in FINISHED:
                return execution
        return None

    try:
        found = system.wait(first_success, left, lambda: f"no run of schedule {schedule['cron']}")
    finally:
        off = system.api.patch(
            system.path(f"workflows/{workflow['id']}/triggers/{trigger['id']}"),
            json={"enabled": False},
        )
        assert off.status_code == 200, off.text
    execution = system.execution(found["id"])
    assert execution["status"] == "success", execution
    steps = _assert_steps(execution, {"note": "success", "shout": "success"})
    assert steps["shout"]["output"] == {"result": "TICK"}
    info = system.run_info(execution["dagster_run_id"])
    tags = {t["key"]: t["value"] for t in info["tags"]}
    assert tags["flowpilot/trigger"] == str(trigger["id"]), tags
    assert tags["dagster/schedule_name"].endswith(f"__schedule_{trigger['id']}"), tags
    assert tags["flowpilot/execution"] == str(execution["id"])
    # The cron's hours are Kathmandu's (in UTC they would not come up today): the run was
    # made in one of them.
    made = datetime.fromtimestamp(info["creationTime"], ZoneInfo(SCHEDULE_ZONE))
    assert str(made.hour) in schedule["cron"].split()[1].split(","), made
    read = system.api.get(system.path(f"workflows/{workflow['id']}/triggers/{trigger['id']}"))
    assert read.json()["last_triggered_at"], read.json()
