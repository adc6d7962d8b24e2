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

import contextlib
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from flowpilot.echo_server import EchoServer
from orchestration.steps.definition import job_name_for
from tests.e2e.conftest import free_port

pytestmark = pytest.mark.slow

ORG = "demo"
QUOTA_ORG = "e2e-quota"
UP_TIMEOUT = 240.0
RUN_TIMEOUT = 120.0
FINISHED = ("success", "failure", "canceled")
# Dagster run statuses that hold a slot of the run queue (QueuedRunCoordinator's in-progress).
IN_PROGRESS = ("STARTING", "STARTED", "CANCELING")

GREET = {
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


def _descendant_groups(pid: int) -> set[int]:
    """Process groups of every live descendant of `pid` (flowpilot up starts each child in a
    group of its own; these are what must be gone after it stops)."""
    children: dict[int, list[int]] = {}
    groups: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        child = int(entry.name)
        children.setdefault(int(fields[1]), []).append(child)
        groups[child] = int(fields[2])
    found: set[int] = set()
    todo = list(children.get(pid, []))
    while todo:
        current = todo.pop()
        found.add(groups[current])
        todo.extend(children.get(current, []))
    return found


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class System:
    env: dict[str, str]
    log: Path
    api: httpx.Client
    base: str
    dagster: str
    echo: EchoServer
    org_ids: dict[str, int] = field(default_factory=dict)

    def path(self, rest: str, org: str = ORG) -> str:
        return f"/api/v1/orgs/{org}/{rest.lstrip('/')}"

    def log_tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = httpx.post(
            f"{self.dagster}/graphql",
            json={"query": query, "variables": variables or {}},
            timeout=30,
        )
        response.raise_for_status()
        body = response.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def publish(self, name: str, definition: dict, org: str = ORG) -> dict:
        created = self.api.post(
            self.path("workflows", org), json={"name": name, "definition": definition}
        )
        assert created.status_code == 201, created.text
        workflow = created.json()
        published = self.api.post(self.path(f"workflows/{workflow['id']}/publish", org), json={})
        assert published.status_code == 201, published.text
        return workflow

    def trigger(self, workflow_id: int, body: dict, org: str = ORG) -> dict:
        made = self.api.post(self.path(f"workflows/{workflow_id}/triggers", org), json=body)
        assert made.status_code == 201, made.text
        return made.json()

    def execution(self, execution_id: int, org: str = ORG) -> dict:
        response = self.api.get(self.path(f"executions/{execution_id}", org))
        assert response.status_code == 200, response.text
        return response.json()

    def executions(self, workflow_id: int, org: str = ORG) -> list[dict]:
        response = self.api.get(
            self.path("executions", org), params={"workflow": workflow_id, "page_size": 100}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        return body["results"] if isinstance(body, dict) else body

    def wait_finished(
        self, execution_id: int, org: str = ORG, timeout: float = RUN_TIMEOUT
    ) -> dict:
        body: dict = {}

        def finished() -> bool:
            nonlocal body
            body = self.execution(execution_id, org)
            return body["status"] in FINISHED

        self.wait(finished, timeout, lambda: f"execution {execution_id} not finished: {body}")
        return body

    def wait(self, check: Callable[[], Any], timeout: float, what: Callable[[], str]) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.3)
        raise AssertionError(
            f"{what()} within {timeout:.0f}s\n--- flowpilot up:\n{self.log_tail()}"
        )

    def run_info(self, run_id: str) -> dict:
        query = """query Run($id: ID!) { runOrError(runId: $id) { __typename
            ... on Run { runId status jobName creationTime startTime endTime
            tags { key value } } } }"""
        return self.graphql(query, {"id": run_id})["runOrError"]


def _wait_for_log(log: Path, marker: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and marker in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.3)
    text = log.read_text(errors="replace") if log.exists() else ""
    raise AssertionError(
        f"no {marker!r} within {timeout:.0f}s:\n" + "\n".join(text.splitlines()[-60:])
    )


def _stop_up(up: subprocess.Popen, groups: set[int]) -> tuple[int | None, set[int]]:
    """Ctrl-C to `flowpilot up`; returns its exit code and the process groups it started that
    were still there 10 s after it exited, which are then stopped here (they are ours: recorded
    as its descendants while it ran)."""
    if up.poll() is None:
        os.killpg(up.pid, signal.SIGINT)
    try:
        code = up.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(up.pid, signal.SIGKILL)
        code = up.wait(timeout=10)
    deadline = time.monotonic() + 10
    left = {g for g in groups if g != up.pid and _group_alive(g)}
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = {g for g in left if _group_alive(g)}
    lingering = set(left)
    for pgid in left:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = {g for g in left if _group_alive(g)}
    for pgid in left:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    return code, lingering


@pytest.fixture(scope="module")
def system(tmp_path_factory) -> Iterator[System]:
    home = tmp_path_factory.mktemp("triggers") / "home"
    env = dict(os.environ)
    for name in (
        "DATABASE_URL",
        "DAGSTER_PG_URL",
        "DATABASE_OWNER_URL",
        "DAGSTER_HOME",
        "DAGSTER_URL",
    ):
        env.pop(name, None)
    env.update(
        FLOWPILOT_HOME=str(home),
        FLOWPILOT_PORT=str(free_port()),
        FLOWPILOT_DAGSTER_PORT=str(free_port()),
        DJANGO_SETTINGS_MODULE="control_plane.settings.dev",
    )
    flowpilot = os.path.join(os.path.dirname(sys.executable), "flowpilot")
    log = home.parent / "flowpilot-up.log"
    groups: set[int] = set()
    stop_watching = threading.Event()
    with open(log, "wb") as out:
        up = subprocess.Popen(
            [flowpilot, "up"], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def watch() -> None:  # the children come and go (run workers): remember every group
        while not stop_watching.is_set() and up.poll() is None:
            groups.update(_descendant_groups(up.pid))
            stop_watching.wait(1.0)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    echo = EchoServer().start()
    try:
        _wait_for_log(log, "FlowPilot is up", up, UP_TIMEOUT)
        seed = json.loads(
            subprocess.run(
                [flowpilot, "seed", "--json"], env=env, capture_output=True, text=True, check=True
            ).stdout
        )
        base = f"http://127.0.0.1:{env['FLOWPILOT_PORT']}"
        api = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {seed['token']}"}, timeout=30
        )
        dagster = f"http://127.0.0.1:{env['FLOWPILOT_DAGSTER_PORT']}"
        yield System(env=env, log=log, api=api, base=base, dagster=dagster, echo=echo)
        api.close()
    finally:
        echo.stop()
        stop_watching.set()
        watcher.join(timeout=5)
        groups.update(_descendant_groups(up.pid))
        code, lingering = _stop_up(up, groups)
        from flowpilot import config, pg

        saved = dict(os.environ)
        os.environ.update(env)
        try:
            pg.stop(config.load())
        finally:
            os.environ.clear()
            os.environ.update(saved)
        assert code == 0, f"flowpilot up exited {code}:\n" + log.read_text(errors="replace")[-4000:]
        assert not lingering, f"process groups {sorted(lingering)} outlived flowpilot up"


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
