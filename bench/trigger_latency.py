#!/usr/bin/env python
"""Trigger latency benchmark: from the API call that triggers a workflow to its first step
starting, and to its execution finishing, through the real processes.

Setup, all in a FLOWPILOT_HOME of its own (default: a fresh temp dir, deleted at the end unless
--keep): the embedded PostgreSQL, migrations, the demo seed (a published 3-step workflow:
template -> http.request to a local echo server -> template), the control plane as a real
process (uvicorn) and the Dagster daemon (`dagster-daemon run -w workspace.yaml`, which starts
the code server and launches runs). One warm-up run, waited for and left out of the figures,
shows that the daemon is ready. Then, one after the other, --runs runs of:

    t0 = time.time(); POST /api/v1/workflows/{id}/run   (Authorization: Bearer ...)

waiting (polling the database) until the execution is finished. From the database timestamps:

    first step  = the first ExecutionStep.started_at - t0
    finished    = WorkflowExecution.finished_at - t0   (set by the run-status sensor)

plus, for context, the API answer (202), the Dagster run's creation by the trigger sensor
(`runs.create_timestamp` in Dagster's database), the run worker starting (`runs.start_time`) and
WorkflowExecution.started_at (the run's first op recorded the execution). All processes share
this machine's clock. p50 and p95 are computed with linear interpolation between the closest
ranks.

Between runs the script sleeps a random 0..--gap seconds (default 5). Dagster's sensor daemon
evaluates sensors in a loop of at least 5 seconds, and the execution is finished by a sensor in
that same loop: without the gap every trigger would land just after a sensor tick and measure
the worst case of the trigger sensor's wait rather than its distribution (--gap 0 does that).

Run from the project root:

    .venv/bin/python bench/trigger_latency.py            # 20 runs
    .venv/bin/python bench/trigger_latency.py --runs 3 --keep
"""

from __future__ import annotations

import argparse
import math
import random
import re
import sys
import time
from datetime import UTC
from pathlib import Path
from typing import Any

from _common import database_and_children, machine, percentile, private_home, wait_for_health

RUN_TIMEOUT = 180.0  # seconds for one execution (the warm-up includes loading the code location)
POLL_INTERVAL = 0.05


class Bench:
    def __init__(self, cfg: Any, token: str, workflow_id: int, echo_url: str, children: list):
        import httpx

        self.cfg = cfg
        self.workflow_id = workflow_id
        self.echo_url = echo_url
        self.children = children
        self.client = httpx.Client(
            base_url=cfg.control_plane_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30.0,
        )

    def check_children(self) -> None:
        for child in self.children:
            if child.poll() is not None:
                raise SystemExit(
                    f"{' '.join(child.args[:2])} exited ({child.returncode}); "
                    f"see {self.cfg.home / 'logs'} (run with --keep to keep them)"
                )

    def dagster_run_times(self, run_id: str | None) -> tuple[float, float]:
        """(created, started) of a Dagster run, epoch seconds; NaN when unknown."""
        import psycopg

        if not run_id:
            return math.nan, math.nan
        url = re.sub(r"^postgresql\+\w+://", "postgresql://", self.cfg.dagster_pg_url)
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT create_timestamp, start_time FROM runs WHERE run_id = %s", [run_id]
            ).fetchone()
        if row is None:
            return math.nan, math.nan
        created, started = row
        # Dagster stores create_timestamp as naive UTC (it reads it back the same way).
        created_at = created.replace(tzinfo=UTC).timestamp() if created else math.nan
        return created_at, started if started is not None else math.nan

    def run_once(self, timeout: float = RUN_TIMEOUT) -> dict[str, Any]:
        from control_plane.executions.models import ExecutionStep, WorkflowExecution

        body = {"inputs": {"name": "bench", "url": f"{self.echo_url}/echo"}}
        t0 = time.time()
        response = self.client.post(f"/api/v1/workflows/{self.workflow_id}/run", json=body)
        t_response = time.time() - t0
        if response.status_code != 202:
            raise SystemExit(f"trigger answered {response.status_code}: {response.text[:500]}")
        execution_id = response.json()["id"]
        deadline = time.monotonic() + timeout
        while True:
            # The benchmark watches as a system observer (the owner role, past row security).
            execution = WorkflowExecution.objects.unscoped().using("owner").get(pk=execution_id)
            if execution.status in WorkflowExecution.FINISHED:
                break
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"execution {execution_id} still {execution.status} after {timeout:.0f}s; "
                    f"see {self.cfg.home / 'logs'} (run with --keep to keep them)"
                )
            self.check_children()
            time.sleep(POLL_INTERVAL)
        run_created, run_start = self.dagster_run_times(execution.dagster_run_id)
        steps = list(
            ExecutionStep.objects.unscoped()
            .using("owner")
            .filter(execution=execution)
            .order_by("position")
        )
        started = [s.started_at for s in steps if s.started_at is not None]
        first_step = min(started).timestamp() - t0 if started else math.nan
        return {
            "execution": execution_id,
            "status": execution.status,
            "error": execution.error,
            "response": t_response,
            "run_created": run_created - t0,
            "run_worker": run_start - t0,
            "run_started": (
                execution.started_at.timestamp() - t0 if execution.started_at else math.nan
            ),
            "first_step": first_step,
            "finished": execution.finished_at.timestamp() - t0,
            "steps": [(s.step_id, s.status) for s in steps],
        }


def run(args: argparse.Namespace, home: Path) -> int:
    from flowpilot import processes, runtime

    with database_and_children() as (cfg, children):
        from control_plane.core.seed import seed_demo
        from flowpilot.echo_server import EchoServer

        seed = seed_demo()
        runtime.close_db()
        log_dir = cfg.home / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        env = processes.child_env(cfg)
        setup_started = time.monotonic()
        children.append(
            processes.spawn(
                processes.control_plane_args(cfg),
                env,
                log_file=log_dir / "uvicorn.log",
            )
        )
        children.append(
            processes.spawn(
                processes.dagster_daemon_args(),
                env,
                log_file=log_dir / "dagster-daemon.log",
            )
        )
        wait_for_health(cfg, children)
        print(f"control plane healthy after {time.monotonic() - setup_started:.1f}s")
        with EchoServer() as echo:
            bench = Bench(cfg, seed.token, seed.workflow.pk, echo.url, children)
            warm = bench.run_once()
            print(
                f"warm-up run: {warm['status']} (execution {warm['execution']}), daemon ready "
                f"{time.monotonic() - setup_started:.1f}s after the processes started; "
                f"first step at {warm['first_step']:.2f}s, finished at {warm['finished']:.2f}s"
            )
            if warm["status"] != "success":
                print(f"  warm-up error: {warm['error']}")
            results = []
            for index in range(args.runs):
                if args.gap > 0:
                    time.sleep(random.uniform(0, args.gap))
                result = bench.run_once()
                results.append(result)
                print(
                    f"run {index + 1:>3}/{args.runs}: {result['status']:<8} "
                    f"api {result['response'] * 1000:4.0f} ms  "
                    f"dagster run {result['run_created']:5.2f}s  "
                    f"worker {result['run_worker']:5.2f}s  "
                    f"first step {result['first_step']:6.2f}s  "
                    f"finished {result['finished']:6.2f}s"
                )
                if result["status"] != "success":
                    print(f"  error: {result['error']}  steps: {result['steps']}")
                sys.stdout.flush()
        report(results, args.gap)
        failures = [r for r in results if r["status"] != "success"]
        return 1 if failures else 0


def report(results: list[dict[str, Any]], gap: float) -> None:
    ok = [r for r in results if r["status"] == "success"]
    print()
    print(
        f"Trigger latency, 3-step workflow, {len(results)} sequential runs ({len(ok)} success), "
        f"random 0-{gap:g}s gap before each"
    )
    print(f"machine: {machine()}")
    print(f"  {'from the POST (t0) to':<42} {'p50':>9} {'p95':>9} {'min':>9} {'max':>9}")
    for key, label in (
        ("response", "the API answer (202)"),
        ("run_created", "Dagster run created (trigger sensor)"),
        ("run_worker", "run worker started (RUN_START)"),
        ("run_started", "execution started (first op)"),
        ("first_step", "first step started"),
        ("finished", "execution finished"),
    ):
        values = [r[key] for r in results if not math.isnan(r[key])]
        if not values:
            continue
        cells = [percentile(values, 0.5), percentile(values, 0.95), min(values), max(values)]
        print(f"  {label:<42} " + " ".join(f"{v:>8.3f}s" for v in cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--home", type=Path, help="FLOWPILOT_HOME to use (default: a fresh temp dir)"
    )
    parser.add_argument(
        "--gap",
        type=float,
        default=5.0,
        help="sleep a random 0..GAP seconds before each run (default 5; see above)",
    )
    parser.add_argument("--keep", action="store_true", help="keep FLOWPILOT_HOME (and its logs)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    with private_home(args.home, args.keep) as home:
        return run(args, home)


if __name__ == "__main__":
    sys.exit(main())
