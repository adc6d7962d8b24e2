"""The systems the trigger benchmarks (trigger_latency.py, throughput.py) drive, each as real
processes on this machine, and the clocks they are measured with.

- **FlowPilot**: `flowpilot up` (the control plane under uvicorn, `dagster dev` with FlowPilot's
  dagster.yaml), whatever it does at the time. The benchmark workflow has three
  `transform.template` steps and a webhook trigger; the demo organization is given the
  enterprise plan (no monthly run limit) with `concurrent_runs` = 10, Dagster's default
  `max_concurrent_runs`, so both systems may run as many runs at once.
- **plain Dagster**: bench/plain_dagster under `dagster dev` with a DAGSTER_HOME of its own
  (bench/plain_dagster/dagster.yaml: Postgres storage, every other setting Dagster's default)
  and a database of its own (`plain_dagster`) on the same embedded Postgres. Triggered either
  by a row inserted into `bench_trigger` (read by the project's sensor) or by a GraphQL
  `launchRun`.

One system runs at a time; each is stopped (its process groups, and any group its processes
made) before the next starts, and on Ctrl-C or failure.

Measurement points, identical for every system (every process shares this machine's clock):
- **trigger** (t0): `time.time()` just before the webhook request, the row insert or the
  `launchRun` request is sent;
- **run created**: the Dagster run's `create_timestamp`;
- **worker started**: the run's `RUN_START` event;
- **first step**: the run's first `STEP_START` event in Dagster's event log;
- **finished**: the run's `RUN_SUCCESS` (or `RUN_FAILURE`) event;
- FlowPilot also: **execution finished**, `WorkflowExecution.finished_at` in the control plane
  (written by its run-status sensor)."""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import ROOT, free_port

CLK_TCK = os.sysconf("SC_CLK_TCK")
PLAIN_DIR = ROOT / "bench" / "plain_dagster"
PLAIN_DB = "plain_dagster"
FINISHED_RUN = ("SUCCESS", "FAILURE", "CANCELED")
UP_TIMEOUT = 300.0

# The benchmark workflow: three steps of trivial work, like the plain job's three ops.
THREE_STEPS = {
    "inputs": {"n": {"type": "integer", "default": 0}},
    "steps": [
        {"id": "first", "type": "transform.template", "config": {"template": "{{ inputs.n }}"}},
        {
            "id": "second",
            "type": "transform.template",
            "after": ["first"],
            "config": {"template": "{{ steps.first.output.result }}+1"},
        },
        {
            "id": "third",
            "type": "transform.template",
            "after": ["second"],
            "config": {"template": "({{ steps.second.output.result }})*2"},
        },
    ],
}


# -- processes -----------------------------------------------------------------------------------


def _scan_proc() -> dict[tuple[int, int], tuple[int, int, int]]:
    """Every live process: (pid, start time) -> (parent pid, process group, CPU ticks)."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        # fields[0] is the state (field 3 of proc(5)): ppid 4, pgrp 5, utime 14, stime 15,
        # starttime 22.
        key = (int(entry.name), int(fields[19]))
        found[key] = (int(fields[1]), int(fields[2]), int(fields[11]) + int(fields[12]))
    return found


class ProcessWatch:
    """Samples /proc every `interval` seconds: the process groups under each root (so they can
    all be stopped, even those that left their parent's group) and the CPU time of every
    process seen under it, dead ones included at their last sample (a process that lives less
    than one interval is missed)."""

    def __init__(self, roots: dict[str, int], interval: float = 0.5) -> None:
        self.roots = dict(roots)
        self.interval = interval
        self.groups: dict[str, set[int]] = {name: set() for name in roots}
        self._ticks: dict[str, dict[tuple[int, int], int]] = {name: {} for name in roots}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> ProcessWatch:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        procs = _scan_proc()
        children: dict[int, list[tuple[int, int]]] = {}
        by_pid: dict[int, tuple[int, int]] = {}
        for key, (ppid, _, _) in procs.items():
            children.setdefault(ppid, []).append(key)
            by_pid[key[0]] = key
        with self._lock:
            for name, root in self.roots.items():
                todo = [by_pid[root]] if root in by_pid else []
                while todo:
                    key = todo.pop()
                    _, pgid, ticks = procs[key]
                    self.groups[name].add(pgid)
                    self._ticks[name][key] = ticks
                    todo.extend(children.get(key[0], []))

    def cpu_seconds(self) -> dict[str, float]:
        with self._lock:
            return {name: sum(t.values()) / CLK_TCK for name, t in self._ticks.items()}


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values)
    return (total - idle) / CLK_TCK, total / CLK_TCK


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process_tree(process: subprocess.Popen, groups: set[int], timeout: float = 120) -> None:
    """SIGTERM the process's group (the way `flowpilot up` and `dagster dev` expect to be
    stopped), SIGKILL it after `timeout`; then the same for any group recorded under it that
    is still there. Only groups this benchmark's own processes made are ever signalled."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    left = {g for g in groups | {process.pid} if _group_alive(g)}
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


def _wait(check: Callable[[], Any], timeout: float, what: str, process: subprocess.Popen) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception:  # not up yet
            value = None
        if value:
            return value
        if process.poll() is not None:
            raise SystemExit(f"{' '.join(process.args[:2])} exited ({process.returncode}): {what}")
        time.sleep(0.3)
    raise SystemExit(f"timed out after {timeout:.0f}s: {what}")


# -- Dagster's storage ---------------------------------------------------------------------------


def _epoch(naive_utc: datetime | None) -> float:
    return naive_utc.replace(tzinfo=UTC).timestamp() if naive_utc else math.nan


class DagsterStorage:
    """Reads a Dagster instance's Postgres storage (runs, run_tags, event_logs)."""

    def __init__(self, sqlalchemy_url: str) -> None:
        import psycopg

        url = re.sub(r"^postgresql\+\w+://", "postgresql://", sqlalchemy_url)
        self.conn = psycopg.connect(url, autocommit=True)

    def close(self) -> None:
        self.conn.close()

    def runs_by_tag(self, key: str, values: list[str]) -> dict[str, str]:
        rows = self.conn.execute(
            "SELECT value, run_id FROM run_tags WHERE key = %s AND value = ANY(%s)", [key, values]
        ).fetchall()
        return dict(rows)

    def run_times(self, run_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Per run: status, created, worker started, first step, finished (epoch seconds)."""
        if not run_ids:
            return {}
        out: dict[str, dict[str, Any]] = {}
        for run_id, status, created in self.conn.execute(
            "SELECT run_id, status, create_timestamp FROM runs WHERE run_id = ANY(%s)", [run_ids]
        ):
            out[run_id] = {"status": status, "created": _epoch(created)}
        for run_id, kind, first in self.conn.execute(
            "SELECT run_id, dagster_event_type, min(timestamp) FROM event_logs"
            " WHERE run_id = ANY(%s) AND dagster_event_type IN"
            " ('PIPELINE_START', 'STEP_START', 'PIPELINE_SUCCESS', 'PIPELINE_FAILURE',"
            " 'PIPELINE_CANCELED') GROUP BY 1, 2",  # RUN_* events keep their old names there
            [run_ids],
        ):
            key = {"PIPELINE_START": "worker", "STEP_START": "first_step"}.get(kind, "finished")
            if run_id in out:
                out[run_id][key] = _epoch(first)
        return out

    def successes_between(self, start: float, end: float, job_name: str) -> list[float]:
        """When each run of the job that succeeded in [start, end] did (epoch seconds)."""
        rows = self.conn.execute(
            "SELECT e.timestamp FROM event_logs e JOIN runs r ON r.run_id = e.run_id"
            " WHERE e.dagster_event_type = 'PIPELINE_SUCCESS' AND r.pipeline_name = %s"
            " AND e.timestamp >= %s AND e.timestamp <= %s",
            [
                job_name,
                datetime.fromtimestamp(start, UTC).replace(tzinfo=None),
                datetime.fromtimestamp(end, UTC).replace(tzinfo=None),
            ],
        ).fetchall()
        return [_epoch(ts) for (ts,) in rows]

    def status_counts(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT status, count(*) FROM runs GROUP BY 1").fetchall())


# -- one trigger and what became of it -----------------------------------------------------------


@dataclass
class Trigger:
    index: int
    t0: float  # epoch seconds, just before the request/insert was sent
    answer: float  # how long the request/insert took
    key: Any  # execution id (FlowPilot), row id (sensor), run id (GraphQL)
    run_id: str | None = None
    status: str = ""
    created: float = math.nan
    worker: float = math.nan
    first_step: float = math.nan
    finished: float = math.nan
    execution_finished: float = math.nan  # FlowPilot only
    complete: bool = False

    def since(self, name: str) -> float:
        return getattr(self, name) - self.t0


class System(ABC):
    """What the measuring loops need from a system under test."""

    label: str
    storage: DagsterStorage
    watch: ProcessWatch

    @abstractmethod
    def send(self, index: int) -> Trigger:
        """Send trigger number `index`; returns it with its send time."""

    @abstractmethod
    def resolve(self, triggers: list[Trigger]) -> None:
        """Fill in the run and its times for the triggers not complete yet."""

    def _fill_times(self, triggers: list[Trigger]) -> None:
        times = self.storage.run_times([t.run_id for t in triggers if t.run_id])
        for trigger in triggers:
            found = times.get(trigger.run_id or "")
            if not found:
                continue
            trigger.status = found["status"]
            for name in ("created", "worker", "first_step", "finished"):
                if name in found:
                    setattr(trigger, name, found[name])


def send_paced(
    system: System, count: int, interval: float, rng: random.Random, start_index: int = 0
) -> list[Trigger]:
    """`count` triggers, one every `interval` seconds on average: each gap drawn uniformly from
    0.5-1.5 x interval, so the triggers fall at every phase of the systems' tick loops."""
    triggers = []
    next_at = time.monotonic()
    for index in range(start_index, start_index + count):
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        triggers.append(system.send(index))
        next_at += interval * rng.uniform(0.5, 1.5)
    return triggers


def wait_complete(system: System, triggers: list[Trigger], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        pending = [t for t in triggers if not t.complete]
        if not pending:
            return
        system.resolve(pending)
        if all(t.complete for t in pending):
            return
        if time.monotonic() > deadline:
            left = sum(not t.complete for t in triggers)
            raise SystemExit(f"{system.label}: {left} of {len(triggers)} runs not finished")
        time.sleep(0.5)


# -- FlowPilot -----------------------------------------------------------------------------------


class FlowPilot(System):
    label = "FlowPilot webhook"

    def __init__(self, cfg: Any, token: str, log_dir: Path, concurrent_runs: int = 10) -> None:
        self.cfg = cfg
        self.token = token
        self.log = log_dir / "flowpilot-up.log"
        self.concurrent_runs = concurrent_runs
        self.process: subprocess.Popen | None = None
        self.hook_url = ""

    def __enter__(self) -> FlowPilot:
        import httpx

        from flowpilot import pg, processes

        self.process = processes.spawn(
            [processes.bin_path("flowpilot"), "up"], dict(os.environ), log_file=self.log
        )
        self.watch = ProcessWatch(
            {"system": self.process.pid, "postgres": pg.server_pid(self.cfg.pg_dir) or -1}
        ).start()
        try:
            _wait(
                lambda: "FlowPilot is up" in self.log.read_text(errors="replace"),
                UP_TIMEOUT,
                f"`flowpilot up` ready (see {self.log})",
                self.process,
            )
            self.api = httpx.Client(
                base_url=f"{self.cfg.control_plane_url}/api/v1/orgs/demo/",
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=60,
            )
            self.hooks = httpx.Client(timeout=60)
            self.storage = DagsterStorage(self.cfg.dagster_pg_url)
            self._prepare()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for name in ("api", "hooks", "storage"):
            if hasattr(self, name):
                with contextlib.suppress(Exception):
                    getattr(self, name).close()
        if self.process is not None:
            self.watch.stop()
            stop_process_tree(self.process, self.watch.groups["system"])

    def _call(self, method: str, path: str, expect: int, **kwargs: Any) -> dict:
        response = self.api.request(method, path, **kwargs)
        if response.status_code != expect:
            raise SystemExit(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json()

    def _prepare(self) -> None:
        self._call(
            "PATCH",
            "quota",
            200,
            json={"plan": "enterprise", "concurrent_runs": self.concurrent_runs},
        )
        workflow = self._call(
            "POST",
            "workflows",
            201,
            json={"name": f"Bench three steps {int(time.time())}", "definition": THREE_STEPS},
        )
        self._call("POST", f"workflows/{workflow['id']}/publish", 201, json={})
        hook = self._call(
            "POST", f"workflows/{workflow['id']}/triggers", 201, json={"kind": "webhook"}
        )
        self.hook_url = hook["url"]
        from orchestration.steps.definition import job_name_for

        self.job_name = job_name_for("demo", workflow["slug"])
        self.workflow_id = workflow["id"]
        _wait(
            lambda: self.job_name in _workspace_jobs(self.cfg.dagster_url),
            120,
            f"job {self.job_name} loaded in Dagster",
            self.process,
        )

    def send(self, index: int) -> Trigger:
        t0 = time.time()
        response = self.hooks.post(self.hook_url, json={"inputs": {"n": index}})
        answer = time.time() - t0
        if response.status_code != 202:
            raise SystemExit(f"webhook answered {response.status_code}: {response.text[:500]}")
        return Trigger(index, t0, answer, response.json()["execution_id"])

    def resolve(self, triggers: list[Trigger]) -> None:
        from control_plane.executions.models import WorkflowExecution

        rows = (
            WorkflowExecution.objects.unscoped()  # a system observer, past row security
            .using("owner")
            .filter(pk__in=[t.key for t in triggers])
            .values_list("pk", "dagster_run_id", "status", "finished_at")
        )
        executions = {pk: (run_id, status, end) for pk, run_id, status, end in rows}
        for trigger in triggers:
            run_id, status, end = executions.get(trigger.key, (None, "", None))
            trigger.run_id = run_id or trigger.run_id
            if status in WorkflowExecution.FINISHED and end is not None:
                trigger.execution_finished = end.timestamp()
        self._fill_times(triggers)
        for trigger in triggers:
            trigger.complete = trigger.status in FINISHED_RUN and not math.isnan(
                trigger.execution_finished
            )

    def executions_finished_between(self, start: float, end: float) -> list[float]:
        from control_plane.executions.models import WorkflowExecution

        return [
            moment.timestamp()
            for moment in WorkflowExecution.objects.unscoped()
            .using("owner")
            .filter(
                status=WorkflowExecution.Status.SUCCESS,
                finished_at__gte=datetime.fromtimestamp(start, UTC),
                finished_at__lte=datetime.fromtimestamp(end, UTC),
            )
            .values_list("finished_at", flat=True)
        ]

    def backlog(self) -> dict[str, int]:
        from control_plane.executions.models import TriggerEvent, WorkflowExecution

        executions = WorkflowExecution.objects.unscoped().using("owner")
        return {
            "events not launched": TriggerEvent.objects.unscoped()
            .using("owner")
            .filter(status__in=[TriggerEvent.Status.PENDING, TriggerEvent.Status.LAUNCHING])
            .count(),
            "executions queued": executions.filter(status=WorkflowExecution.Status.QUEUED).count(),
            "executions running": executions.filter(
                status=WorkflowExecution.Status.RUNNING
            ).count(),
        }


def _workspace_jobs(dagster_url: str) -> set[str]:
    import httpx

    query = """{ repositoriesOrError { ... on RepositoryConnection {
        nodes { jobs { name } } } } }"""
    body = httpx.post(f"{dagster_url}/graphql", json={"query": query}, timeout=30).json()
    nodes = body["data"]["repositoriesOrError"].get("nodes", [])
    return {job["name"] for node in nodes for job in node["jobs"]}


# -- plain Dagster -------------------------------------------------------------------------------


LAUNCH = """mutation Launch($params: ExecutionParams!) { launchRun(executionParams: $params) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""


class PlainDagster(System):
    """bench/plain_dagster under `dagster dev`; `mode` "sensor" (a row insert) or "graphql"
    (launchRun) chooses what `send` does."""

    def __init__(self, cfg: Any, log_dir: Path) -> None:
        from flowpilot import config

        self.cfg = cfg
        self.log = log_dir / "plain-dagster.log"
        self.home = cfg.home / "plain_dagster"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.pg_url = config.embedded_url(
            cfg.pg_dir, PLAIN_DB, config.OWNER_ROLE, driver="postgresql+psycopg2"
        )
        self.libpq_url = config.embedded_url(cfg.pg_dir, PLAIN_DB, config.OWNER_ROLE)
        self.process: subprocess.Popen | None = None
        self.mode = "sensor"

    @property
    def label(self) -> str:  # type: ignore[override]
        if self.mode == "sensor":
            return "Dagster sensor (30 s)"
        return "Dagster GraphQL launchRun"

    def _create_database(self) -> None:
        import psycopg

        from flowpilot import config

        admin = config.embedded_url(self.cfg.pg_dir, "postgres", config.OWNER_ROLE)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {PLAIN_DB} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {PLAIN_DB}")
        self.rows = psycopg.connect(self.libpq_url, autocommit=True)
        self.rows.execute(
            "CREATE TABLE bench_trigger (id bigserial PRIMARY KEY, payload jsonb NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT now())"
        )

    def __enter__(self) -> PlainDagster:
        import httpx

        from flowpilot import pg, processes

        self._create_database()
        if self.home.exists():
            shutil.rmtree(self.home)
        self.home.mkdir(parents=True)
        shutil.copyfile(PLAIN_DIR / "dagster.yaml", self.home / "dagster.yaml")
        env = dict(os.environ)
        for name in ("DAGSTER_PG_URL", "DATABASE_URL", "DATABASE_OWNER_URL", "DAGSTER_URL"):
            env.pop(name, None)
        env.update(
            DAGSTER_HOME=str(self.home),
            PLAIN_DAGSTER_PG_URL=self.pg_url,
            PLAIN_TRIGGER_DB_URL=self.libpq_url,
            PYTHONUNBUFFERED="1",
        )
        args = [
            processes.bin_path("dagster"),
            "dev",
            "-f",
            str(PLAIN_DIR / "definitions.py"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
        ]
        self.process = processes.spawn(args, env, log_file=self.log)
        self.watch = ProcessWatch(
            {"system": self.process.pid, "postgres": pg.server_pid(self.cfg.pg_dir) or -1}
        ).start()
        try:
            _wait(
                lambda: "trivial_job" in _workspace_jobs(self.url),
                UP_TIMEOUT,
                f"plain Dagster up with trivial_job (see {self.log})",
                self.process,
            )
            self.client = httpx.Client(timeout=60)
            self.storage = DagsterStorage(self.pg_url)
            query = """{ repositoriesOrError { ... on RepositoryConnection {
                nodes { name location { name } } } } }"""
            repo = self.client.post(f"{self.url}/graphql", json={"query": query}).json()
            node = repo["data"]["repositoriesOrError"]["nodes"][0]
            self.selector = {
                "repositoryLocationName": node["location"]["name"],
                "repositoryName": node["name"],
                "jobName": "trivial_job",
            }
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for name in ("client", "storage", "rows"):
            if hasattr(self, name):
                with contextlib.suppress(Exception):
                    getattr(self, name).close()
        if self.process is not None:
            self.watch.stop()
            stop_process_tree(self.process, self.watch.groups["system"])

    def send(self, index: int) -> Trigger:
        from psycopg.types.json import Jsonb

        t0 = time.time()
        if self.mode == "sensor":
            (key,) = self.rows.execute(
                "INSERT INTO bench_trigger (payload) VALUES (%s) RETURNING id",
                [Jsonb({"n": index})],
            ).fetchone()
            return Trigger(index, t0, time.time() - t0, str(key))
        response = self.client.post(
            f"{self.url}/graphql",
            json={"query": LAUNCH, "variables": {"params": {"selector": self.selector}}},
        )
        answer = time.time() - t0
        result = response.json()["data"]["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            raise SystemExit(f"launchRun answered {result}")
        run_id = result["run"]["runId"]
        return Trigger(index, t0, answer, run_id, run_id=run_id)

    def resolve(self, triggers: list[Trigger]) -> None:
        unknown = [t for t in triggers if not t.run_id]
        if unknown:
            from plain_dagster.definitions import ROW_TAG

            runs = self.storage.runs_by_tag(ROW_TAG, [t.key for t in unknown])
            for trigger in unknown:
                trigger.run_id = runs.get(trigger.key)
        self._fill_times(triggers)
        for trigger in triggers:
            trigger.complete = trigger.status in FINISHED_RUN and not math.isnan(trigger.finished)

    def backlog(self) -> dict[str, int]:
        from plain_dagster.definitions import ROW_TAG

        (rows,) = self.rows.execute("SELECT count(*) FROM bench_trigger").fetchone()
        (requested,) = self.storage.conn.execute(
            "SELECT count(*) FROM run_tags WHERE key = %s", [ROW_TAG]
        ).fetchone()
        counts = self.storage.status_counts()
        return {
            "rows without a run": rows - requested,
            "runs queued": counts.get("QUEUED", 0),
            "runs starting/started": counts.get("STARTING", 0) + counts.get("STARTED", 0),
        }
