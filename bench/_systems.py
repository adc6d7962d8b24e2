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

The two systems are bench/_flowpilot_system.py and bench/_plain_system.py; this module holds
what they share (process watching and stopping, Dagster's storage, the trigger record).

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

from _common import ROOT

CLK_TCK = os.sysconf("SC_CLK_TCK")
PLAIN_DIR = ROOT / "bench" / "plain_dagster"
PLAIN_DB = "plain_dagster"
FINISHED_RUN = ("SUCCESS", "FAILURE", "CANCELED")
UP_TIMEOUT = 300.0


# The benchmark workflow: three steps of trivial work, like the plain job's three ops.
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

    process: subprocess.Popen | None = None

    def close(self, *clients: str) -> None:
        """Close the named client attributes that exist, then stop the system's processes."""
        for name in clients:
            if hasattr(self, name):
                with contextlib.suppress(Exception):
                    getattr(self, name).close()
        if self.process is not None:
            self.watch.stop()
            stop_process_tree(self.process, self.watch.groups["system"])

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


def _workspace_jobs(dagster_url: str) -> set[str]:
    import httpx

    query = """{ repositoriesOrError { ... on RepositoryConnection {
        nodes { jobs { name } } } } }"""
    body = httpx.post(f"{dagster_url}/graphql", json={"query": query}, timeout=30).json()
    nodes = body["data"]["repositoriesOrError"].get("nodes", [])
    return {job["name"] for node in nodes for job in node["jobs"]}


# -- plain Dagster -------------------------------------------------------------------------------
