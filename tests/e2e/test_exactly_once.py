"""Exactly once under failure: 500 webhooks sent at once to a real `flowpilot up` (control plane
under uvicorn, `dagster dev` with its daemon evaluating the trigger sensor every few seconds)
make exactly 500 Dagster runs, one per event: none twice, none lost.

The control plane reaches Dagster through tests/fakes/flaky_proxy.py (FLOWPILOT_DAGSTER_URL),
which at random resets a launch before forwarding it (no run), forwards it and answers 502 (a
run the caller believes failed), or forwards it and holds the answer past the client timeout.
The fast path hands those to the sensor's sweep; events it does not reach within the grace
period are claimed by the sensor. The runs do not execute: the organization's concurrent-runs
quota is 0, so Dagster's run queue (orchestration/run_coordinator.py) keeps them all QUEUED.
Runs are counted by their `flowpilot/event` tag in Dagster's run storage (Postgres)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

from flowpilot import config
from tests.fakes.flaky_proxy import FlakyProxy

pytestmark = pytest.mark.slow

EVENTS = 500
TIMEOUT = 2  # DAGSTER_TIMEOUT_SECONDS of the control plane
STALE = 10  # FLOWPILOT_LAUNCH_STALE_SECONDS: the sweep's threshold (>= 4 x TIMEOUT)
GRACE = 3  # FLOWPILOT_FAST_LAUNCH_GRACE_SECONDS
QUOTA_CACHE = 5  # the run coordinator re-reads quotas this often (run_coordinator.py)
SENDERS = 50  # webhook requests in flight at once
WORKFLOW = {
    "inputs": {"n": {"type": "integer", "default": 0}},
    "steps": [
        {"id": "note", "type": "transform.template", "config": {"template": "event {{ inputs.n }}"}}
    ],
}
JOB = "demo__exactly_once"
JOB_QUERY = """
query Job($job: String!) {
  pipelineOrError(params: {repositoryLocationName: "flowpilot", repositoryName: "flowpilot",
                           pipelineName: $job}) { __typename }
}
"""
RELOAD = """
mutation { reloadRepositoryLocation(repositoryLocationName: "flowpilot") { __typename } }
"""


def _wait_for(check, timeout: float, what, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what() if callable(what) else what} (after {timeout}s)")


def _log_tail(log: Path, lines: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


class Databases:
    """Read-only SQL on the installation's control-plane and Dagster databases."""

    def __init__(self, home: Path) -> None:
        pg_dir = home / "pg"
        self.control = config.embedded_url(pg_dir, config.CONTROL_PLANE_DB, config.OWNER_ROLE)
        self.dagster = config.embedded_url(pg_dir, config.DAGSTER_DB, config.OWNER_ROLE)

    def _rows(self, url: str, sql: str, params: list | None = None) -> list[tuple]:
        with psycopg.connect(url, autocommit=True) as conn:
            return conn.execute(sql, params or []).fetchall()

    def event_statuses(self, ids: list[int]) -> Counter:
        rows = self._rows(
            self.control,
            "SELECT status, count(*) FROM executions_triggerevent WHERE id = ANY(%s) "
            "GROUP BY status",
            [ids],
        )
        return Counter(dict(rows))

    def event_runs(self, ids: list[int]) -> dict[int, str]:
        rows = self._rows(
            self.control,
            "SELECT id, dagster_run_id FROM executions_triggerevent WHERE id = ANY(%s)",
            [ids],
        )
        return dict(rows)

    def runs_by_event(self) -> dict[int, list[tuple[str, str, bool]]]:
        """{event id: [(run id, status, launched by the sensor)]} of every run with the tag."""
        rows = self._rows(
            self.dagster,
            "SELECT t.value, r.run_id, r.status, EXISTS (SELECT 1 FROM run_tags s "
            "  WHERE s.run_id = r.run_id AND s.key = 'dagster/sensor_name') "
            "FROM run_tags t JOIN runs r ON r.run_id = t.run_id "
            "WHERE t.key = 'flowpilot/event'",
        )
        found: dict[int, list] = {}
        for event_id, run_id, status, by_sensor in rows:
            found.setdefault(int(event_id), []).append((run_id, status, by_sensor))
        return found

    def job_runs(self, job: str) -> int:
        return self._rows(
            self.dagster, "SELECT count(*) FROM runs WHERE pipeline_name = %s", [job]
        )[0][0]


@pytest.mark.timeout(540)  # ~2.5 min on 2 cores; the settle wait below allows for a busy machine
def test_500_concurrent_webhooks_make_exactly_500_runs(fresh_env, tmp_path):
    flowpilot = os.path.join(os.path.dirname(sys.executable), "flowpilot")
    dagster_url = f"http://127.0.0.1:{fresh_env['FLOWPILOT_DAGSTER_PORT']}"
    log = tmp_path / "up.log"
    with FlakyProxy(dagster_url, hold_seconds=TIMEOUT + 1.5, seed=6) as proxy:
        env = {
            **fresh_env,
            "FLOWPILOT_DAGSTER_URL": proxy.url,
            "DAGSTER_TIMEOUT_SECONDS": str(TIMEOUT),
            "FLOWPILOT_LAUNCH_STALE_SECONDS": str(STALE),
            "FLOWPILOT_FAST_LAUNCH_GRACE_SECONDS": str(GRACE),
            "LOG_LEVEL": "WARNING",
            # `flowpilot up` sets up Django for itself with the Dagster processes' defaults
            # (resources/django_setup.py: DATABASE_CONN_MAX_AGE=600), and its children inherit
            # them: uvicorn would then keep one connection per request thread for ten minutes
            # and run out of the server's 200 under this load. The control plane's own default.
            "DATABASE_CONN_MAX_AGE": "0",
        }
        with open(log, "wb") as out:
            up = subprocess.Popen(
                [flowpilot, "up"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_for(
                lambda: "FlowPilot is up" in log.read_text(errors="replace") or up.poll(),
                180,
                lambda: f"flowpilot up did not come up:\n{_log_tail(log)}",
            )
            assert up.poll() is None, _log_tail(log)
            _run(flowpilot, fresh_env, proxy, dagster_url, log)
        finally:
            if up.poll() is None:
                os.killpg(up.pid, signal.SIGINT)
            try:
                up.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait(timeout=10)


def _run(flowpilot: str, env: dict, proxy: FlakyProxy, dagster_url: str, log: Path) -> None:
    import json

    seed = json.loads(
        subprocess.run(
            [flowpilot, "seed", "--json"], env=env, capture_output=True, text=True, check=True
        ).stdout
    )
    base = f"http://127.0.0.1:{env['FLOWPILOT_PORT']}"
    api = httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {seed['token']}"}, timeout=30
    )
    # Runs stay queued: no slot for the organization in Dagster's run queue.
    quota = api.patch(
        "/api/v1/orgs/demo/quota", json={"concurrent_runs": 0, "runs_per_month": 100_000}
    )
    assert quota.status_code == 200, quota.text
    quota_set = time.monotonic()

    created = api.post(
        "/api/v1/workflows",
        json={"name": "Exactly once", "slug": "exactly-once", "definition": WORKFLOW},
    )
    assert created.status_code == 201, created.text
    workflow_id = created.json()["id"]
    assert api.post(f"/api/v1/workflows/{workflow_id}/publish", json={}).status_code == 201
    hook = api.post(f"/api/v1/workflows/{workflow_id}/triggers", json={"kind": "webhook"})
    assert hook.status_code == 201, hook.text
    hook_path = "/hooks/" + hook.json()["url"].rsplit("/hooks/", 1)[1]

    def job_loaded() -> bool:
        answer = httpx.post(
            f"{dagster_url}/graphql", json={"query": JOB_QUERY, "variables": {"job": JOB}}
        ).json()
        return answer["data"]["pipelineOrError"]["__typename"] == "Pipeline"

    try:
        _wait_for(job_loaded, 20, "job loaded")
    except AssertionError:  # the publish's reload answer may have timed out: ask again
        httpx.post(f"{dagster_url}/graphql", json={"query": RELOAD}, timeout=120)
        _wait_for(job_loaded, 60, lambda: f"{JOB} not in Dagster:\n{_log_tail(log)}")
    time.sleep(max(0.0, quota_set + QUOTA_CACHE + 1 - time.monotonic()))

    proxy.chaos(**{"pass": 55, "refuse": 15, "bad_gateway": 15, "hold": 15})
    sent = time.monotonic()
    with (
        httpx.Client(
            base_url=base, timeout=60, limits=httpx.Limits(max_connections=SENDERS)
        ) as hooks,
        ThreadPoolExecutor(max_workers=SENDERS) as senders,
    ):
        answers = list(
            senders.map(lambda n: hooks.post(hook_path, json={"inputs": {"n": n}}), range(EVENTS))
        )
    accepted = time.monotonic() - sent
    assert Counter(a.status_code for a in answers) == {202: EVENTS}, answers[0].text
    event_ids = sorted(a.json()["event_id"] for a in answers)
    assert len(set(event_ids)) == EVENTS

    db = Databases(Path(env["FLOWPILOT_HOME"]))
    _wait_for(
        lambda: db.event_statuses(event_ids) == {"launched": EVENTS},
        240,
        lambda: f"events not all launched: {db.event_statuses(event_ids)}\n{_log_tail(log)}",
        interval=2,
    )
    settled = time.monotonic() - sent
    time.sleep(STALE)  # a sensor tick or two more: no late duplicate may appear
    proxy.chaos(**{"pass": 1})

    runs = db.runs_by_event()
    ours = {pk: runs.get(pk, []) for pk in event_ids}
    duplicates = {pk: found for pk, found in ours.items() if len(found) > 1}
    lost = [pk for pk, found in ours.items() if not found]
    assert not duplicates, (
        f"{len(duplicates)} events with more than one run, e.g. {list(duplicates.items())[:5]}"
    )
    assert not lost, f"{len(lost)} events without a run: {lost[:20]}"
    assert db.job_runs(JOB) == EVENTS  # and no run of the job without an event
    recorded = db.event_runs(event_ids)
    assert all(recorded[pk] == ours[pk][0][0] for pk in event_ids)  # the event names its run
    statuses = Counter(found[0][1] for found in ours.values())
    assert statuses == {"QUEUED": EVENTS}, statuses

    # The failures were real, and both paths launched runs.
    by_sensor = sum(found[0][2] for found in ours.values())
    summary = (
        f"{EVENTS} webhooks accepted in {accepted:.1f} s; all launched {settled:.1f} s after "
        f"the first; runs by the fast path {EVENTS - by_sensor}, by the sensor {by_sensor}; "
        f"proxy {dict(proxy.counts)}, forwarded {proxy.forwarded}"
    )
    logging.getLogger(__name__).warning(summary)  # shown with -rA / -o log_cli=true
    assert proxy.counts["refuse"] and proxy.counts["bad_gateway"] and proxy.counts["hold"]
    assert 0 < by_sensor < EVENTS, summary
