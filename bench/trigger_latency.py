#!/usr/bin/env python
"""Trigger latency, FlowPilot side by side with plain Dagster on this machine: from a trigger to
the first step starting and to the run finishing, p50/p95 over --runs runs of a 3-step
workflow (FlowPilot) and a 3-op job (plain Dagster), each doing trivial work.

Three paths, measured one after the other (one system running at a time):
  (a) FlowPilot, whatever it does at the time: `flowpilot up`, a webhook trigger
      (`POST /hooks/{token}`) on a workflow of three `transform.template` steps;
  (b) plain Dagster, a sensor with Dagster's default interval (30 s) that starts one run per
      new row of a table, with the default run coordinator (QueuedRunCoordinator, dequeued
      every 5 s) and launcher (a process per run): the trigger is a row insert;
  (c) plain Dagster, a GraphQL `launchRun` per trigger, same instance.
See bench/_systems.py for both set-ups and the exact measurement points: the trigger is the
moment the request or insert is sent; first step = the run's first STEP_START event in
Dagster's event log; finished = its RUN_SUCCESS event (for FlowPilot also the execution's
finished_at in the control plane).

Pacing: every path gets the same steady stream, one trigger every --interval seconds on
average (each gap uniform in 0.5-1.5 x interval), after one warm-up run that is left out. A 30 s
sensor then picks triggers up in batches of about 30/interval; the gaps' spread puts triggers at
every point of each system's tick loops. Runs may overlap (a system's own queueing is part of
what is measured), the same way for all three.

Run from the project root (the full figures: 50 runs, about 15 minutes):

    .venv/bin/python bench/trigger_latency.py
    .venv/bin/python bench/trigger_latency.py --runs 10 --systems flowpilot,graphql --keep
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from pathlib import Path

from _common import database_and_children, machine, percentile, private_home
from _flowpilot_system import FlowPilot
from _plain_system import PlainDagster
from _systems import (
    System,
    Trigger,
    machine_cpu,
    send_paced,
    wait_complete,
)

SYSTEMS = ("flowpilot", "sensor", "graphql")
WARMUP_TIMEOUT = 240.0


def measure(system: System, args: argparse.Namespace, rng: random.Random) -> dict:
    print(f"\n== {system.label}")
    started = time.monotonic()
    warm = [system.send(-1)]
    wait_complete(system, warm, WARMUP_TIMEOUT)
    print(
        f"warm-up run {warm[0].status} in {time.monotonic() - started:.1f}s "
        f"(first step {warm[0].since('first_step'):.2f}s, "
        f"finished {warm[0].since('finished'):.2f}s)"
    )
    busy0, total0 = machine_cpu()
    cpu0 = system.watch.cpu_seconds()
    window_start = time.monotonic()
    triggers = send_paced(system, args.runs, args.interval, rng)
    wait_complete(system, triggers, args.timeout)
    wall = time.monotonic() - window_start
    busy1, total1 = machine_cpu()
    cpu1 = system.watch.cpu_seconds()
    for trigger in triggers:
        print(
            f"  {trigger.index + 1:>3}  {trigger.status:<8} answer {trigger.answer * 1000:5.0f} ms"
            f"  run created {trigger.since('created'):6.2f}s"
            f"  worker {trigger.since('worker'):6.2f}s"
            f"  first step {trigger.since('first_step'):6.2f}s"
            f"  finished {trigger.since('finished'):6.2f}s"
            + (
                f"  execution finished {trigger.since('execution_finished'):6.2f}s"
                if not math.isnan(trigger.execution_finished)
                else ""
            )
        )
    sys.stdout.flush()
    return {
        "label": system.label,
        "triggers": triggers,
        "wall": wall,
        "machine_busy": (busy1 - busy0) / max(total1 - total0, 1e-9),
        "cpu": {name: cpu1[name] - cpu0.get(name, 0.0) for name in cpu1},
        "load": os.getloadavg(),
    }


MAIN = (("first_step", "first step (STEP_START)"), ("finished", "finished (RUN_SUCCESS)"))
CONTEXT = (
    ("answer", "request answered"),
    ("created", "run created"),
    ("worker", "worker (RUN_START)"),
    ("execution_finished", "execution finished (CP)"),
)


def _values(triggers: list[Trigger], name: str) -> list[float]:
    if name == "answer":
        return [t.answer for t in triggers]
    return [v for v in (t.since(name) for t in triggers) if not math.isnan(v)]


def _table(results: list[dict], columns: tuple[tuple[str, str], ...], width: int) -> None:
    print(f"  {'':<28}" + "".join(f" | {title:^{width}}" for _, title in columns))
    print(
        f"  {'path':<28}"
        + "".join(
            f" | {'p50':>{width // 3}}{'p95':>{width // 3}}{'max':>{width - 2 * (width // 3)}}"
            for _ in columns
        )
    )
    for result in results:
        cells = []
        for name, _ in columns:
            values = _values(result["triggers"], name)
            if not values:
                cells.append(f" | {'-':>{width}}")
                continue
            p50, p95, top = percentile(values, 0.5), percentile(values, 0.95), max(values)
            third = width // 3
            cells.append(f" | {p50:>{third}.2f}{p95:>{third}.2f}{top:>{width - 2 * third}.2f}")
        print(f"  {result['label']:<28}" + "".join(cells))


def report(results: list[dict], args: argparse.Namespace) -> None:
    print()
    print(
        f"Trigger latency: 3-step workflow / 3-op job of trivial work, {args.runs} runs per path,"
        f" one trigger every {args.interval:g} s on average (gaps uniform 0.5-1.5x), after one"
        " warm-up run"
    )
    print(f"machine: {machine()}")
    print(
        "seconds from the trigger (the moment the webhook request / row insert / launchRun is sent)"
    )
    _table(results, MAIN, 24)
    print()
    _table(results, CONTEXT, 24)
    print("  CP: WorkflowExecution.finished_at in FlowPilot's control plane")
    print()
    for result in results:
        ok = sum(t.status == "SUCCESS" for t in result["triggers"])
        cpu = result["cpu"]
        print(
            f"  {result['label']}: {ok}/{len(result['triggers'])} succeeded;"
            f" {result['wall']:.0f} s from the first trigger to the last run finished; machine"
            f" busy {result['machine_busy'] * 100:.0f}% of {os.cpu_count()} cores (all processes);"
            f" CPU seen in its processes {cpu.get('system', 0):.1f} s, in Postgres"
            f" {cpu.get('postgres', 0):.1f} s (sampled: a lower bound); load average"
            f" {result['load'][0]:.1f}/{result['load'][1]:.1f}"
        )


def run(args: argparse.Namespace) -> int:
    from flowpilot import runtime

    rng = random.Random(args.seed)
    results = []
    with database_and_children() as (cfg, _children):
        from control_plane.core.seed import seed_demo

        seed = seed_demo()
        runtime.close_db()
        log_dir = cfg.home / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        if "flowpilot" in args.systems:
            with FlowPilot(cfg, seed.token, log_dir) as flowpilot:
                results.append(measure(flowpilot, args, rng))
        plain_modes = [mode for mode in ("sensor", "graphql") if mode in args.systems]
        if plain_modes:
            with PlainDagster(cfg, log_dir) as plain:
                for mode in plain_modes:
                    plain.mode = mode
                    results.append(measure(plain, args, rng))
    report(results, args)
    failed = sum(t.status != "SUCCESS" for r in results for t in r["triggers"])
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="measured runs per path (50)")
    parser.add_argument(
        "--interval", type=float, default=5.0, help="mean seconds between triggers (5)"
    )
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma-separated, from {', '.join(SYSTEMS)} (all)",
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds for the last runs to finish (600)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed of the gaps (1)")
    parser.add_argument("--home", type=Path, help="FLOWPILOT_HOME to use (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep FLOWPILOT_HOME and its logs")
    args = parser.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown or not args.systems:
        parser.error(f"--systems: unknown {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    if args.runs < 1 or args.interval < 0:
        parser.error("--runs must be at least 1 and --interval not negative")
    with private_home(args.home, args.keep):
        return run(args)


if __name__ == "__main__":
    sys.exit(main())
