#!/usr/bin/env python
"""Sustained throughput: runs finished per minute under steady trigger load, FlowPilot against
plain Dagster's default set-up, on this machine.

  flowpilot  `flowpilot up`, webhooks (`POST /hooks/{token}`) on a 3-step workflow of trivial
             work, whatever the system does at the time;
  sensor     plain Dagster (bench/plain_dagster): one row inserted per trigger, a sensor with
             the default 30 s interval, the default run coordinator (QueuedRunCoordinator, at
             most 10 runs at once, dequeued every 5 s) and launcher (a process per run).
Both may run 10 runs at once (FlowPilot's demo organization gets `concurrent_runs` = 10). Set-ups
and measurement points: bench/_systems.py. One system runs at a time.

For each: one warm-up run, then --minutes of triggers at a constant --rate per second (the k-th
sent at start + k/rate, from one thread; the rate actually sent is reported). The default rate
is meant to be more than either system finishes, so what finishes is its capacity: the backlog
at the end says whether it was. Counted: runs of the benchmark job whose RUN_SUCCESS event falls
inside the window, per minute (and FlowPilot executions whose finished_at does). CPU: the whole
machine's busy share over the window (other processes included), and the CPU time seen in the
system's own processes and in Postgres (sampled every 0.5 s, so a lower bound: a process's
last half second, and processes shorter than that, are missed), per finished run; and the load
average, which says whether something else was using the machine. The system is stopped at
the end of its window, backlog and all.

    .venv/bin/python bench/throughput.py                 # 5 minutes each, 3 triggers/s
    .venv/bin/python bench/throughput.py --minutes 1 --systems flowpilot
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
import time
from pathlib import Path

from _common import database_and_children, machine, percentile, private_home
from _flowpilot_system import FlowPilot
from _plain_system import PlainDagster
from _systems import System, machine_cpu, wait_complete

SYSTEMS = ("flowpilot", "sensor")
WARMUP_TIMEOUT = 240.0


class Sender(threading.Thread):
    """Sends triggers at a constant rate until stopped; a failed send is counted, not fatal."""

    def __init__(self, system: System, rate: float, until: float) -> None:
        super().__init__(daemon=True)
        self.system, self.rate, self.until = system, rate, until
        self.sent = 0
        self.failed: list[str] = []
        self.answers: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        index = 0
        while not self.halt.is_set():
            due = start + index / self.rate
            if due >= self.until:
                return
            delay = due - time.monotonic()
            if delay > 0 and self.halt.wait(delay):
                return
            try:
                trigger = self.system.send(index)
                self.answers.append(trigger.answer)
                self.sent += 1
            except (Exception, SystemExit) as exc:  # keep the load going; report at the end
                self.failed.append(str(exc)[:200])
            index += 1


def measure(system: System, job_name: str, args: argparse.Namespace) -> dict:
    print(f"\n== {system.label}")
    warm = [system.send(-1)]
    wait_complete(system, warm, WARMUP_TIMEOUT)
    print(
        f"warm-up run {warm[0].status}, finished {warm[0].since('finished'):.2f}s after its trigger"
    )
    window = args.minutes * 60.0
    busy0, total0 = machine_cpu()
    cpu0 = system.watch.cpu_seconds()
    w0 = time.time()
    until = time.monotonic() + window
    sender = Sender(system, args.rate, until)
    sender.start()
    try:
        for minute in range(1, math.ceil(args.minutes) + 1):
            time.sleep(max(0.0, min(until, time.monotonic() + 60) - time.monotonic()))
            done = len(system.storage.successes_between(w0, time.time(), job_name))
            backlog = system.backlog()
            print(f"  minute {minute}: sent {sender.sent}, finished {done}, backlog {backlog}")
            sys.stdout.flush()
    finally:
        sender.halt.set()
        sender.join(timeout=60)
    w1 = w0 + window
    busy1, total1 = machine_cpu()
    cpu1 = system.watch.cpu_seconds()
    load = os.getloadavg()
    finished = system.storage.successes_between(w0, w1, job_name)
    executions = (
        system.executions_finished_between(w0, w1) if isinstance(system, FlowPilot) else None
    )
    per_minute = [0] * math.ceil(args.minutes)
    for moment in finished:
        per_minute[min(int((moment - w0) // 60), len(per_minute) - 1)] += 1
    return {
        "label": system.label,
        "sent": sender.sent,
        "failed": sender.failed,
        "answers": sender.answers,
        "finished": len(finished),
        "executions": None if executions is None else len(executions),
        "per_minute": per_minute,
        "backlog": system.backlog(),
        "machine_busy": (busy1 - busy0) / max(total1 - total0, 1e-9),
        "cpu": {name: cpu1[name] - cpu0.get(name, 0.0) for name in cpu1},
        "load": load,
    }


def report(results: list[dict], args: argparse.Namespace) -> None:
    cores = os.cpu_count() or 1
    print()
    print(
        f"Throughput: {args.minutes:g} min of steady triggers at {args.rate:g}/s offered"
        f" ({args.rate * 60:.0f}/min), 3-step workflow / 3-op job of trivial work"
    )
    print(f"machine: {machine()}")
    header = (
        f"  {'system':<24} {'sent/min':>9} {'runs finished/min':>18} {'steady/min':>11}"
        f" {'per minute':<28} {'CPU s/run':>10} {'machine busy':>13}"
    )
    print(header)
    for r in results:
        minutes = len(r["per_minute"])
        steady = r["per_minute"][1:] if minutes > 1 else r["per_minute"]
        cpu = r["cpu"].get("system", 0.0) + r["cpu"].get("postgres", 0.0)
        per_run = cpu / r["finished"] if r["finished"] else math.nan
        print(
            f"  {r['label']:<24} {r['sent'] / args.minutes:>9.1f}"
            f" {r['finished'] / args.minutes:>18.1f}"
            f" {sum(steady) / len(steady):>11.1f} {' '.join(map(str, r['per_minute'])):<28}"
            f" {per_run:>10.2f} {r['machine_busy'] * 100:>12.0f}%"
        )
    print()
    print(
        "  steady/min: the minutes after the first (the first fills the pipeline). CPU s/run: CPU"
        " seen in the system's processes and Postgres over the window / runs finished."
    )
    for r in results:
        answers = r["answers"]
        p50 = percentile(answers, 0.5) * 1000 if answers else math.nan
        p95 = percentile(answers, 0.95) * 1000 if answers else math.nan
        extra = (
            f"; executions finished in the control plane {r['executions']}"
            if r["executions"] is not None
            else ""
        )
        print(
            f"  {r['label']}: {r['finished']} runs finished{extra}; trigger answered p50 "
            f"{p50:.0f} ms, p95 {p95:.0f} ms; {len(r['failed'])} sends failed"
            + (f" (first: {r['failed'][0]})" if r["failed"] else "")
        )
        print(
            f"    CPU over the window: its processes {r['cpu'].get('system', 0):.0f} s, Postgres"
            f" {r['cpu'].get('postgres', 0):.0f} s, of {cores * args.minutes * 60:.0f}"
            " core-seconds;"
            f" machine busy {r['machine_busy'] * 100:.0f}% (all processes); load average"
            f" {r['load'][0]:.1f}/{r['load'][1]:.1f}; backlog at the end {r['backlog']}"
        )


def run(args: argparse.Namespace) -> int:
    from flowpilot import runtime

    results = []
    with database_and_children() as (cfg, _children):
        from control_plane.core.seed import seed_demo

        seed = seed_demo()
        runtime.close_db()
        log_dir = cfg.home / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        if "flowpilot" in args.systems:
            with FlowPilot(cfg, seed.token, log_dir) as flowpilot:
                results.append(measure(flowpilot, flowpilot.job_name, args))
        if "sensor" in args.systems:
            with PlainDagster(cfg, log_dir) as plain:
                plain.mode = "sensor"
                results.append(measure(plain, "trivial_job", args))
    report(results, args)
    return 0 if all(r["finished"] for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="load window per system (5)")
    parser.add_argument("--rate", type=float, default=3.0, help="triggers per second offered (3)")
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help=f"comma-separated, from {', '.join(SYSTEMS)}"
    )
    parser.add_argument("--home", type=Path, help="FLOWPILOT_HOME to use (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep FLOWPILOT_HOME and its logs")
    args = parser.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown or not args.systems:
        parser.error(f"--systems: unknown {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    if args.minutes <= 0 or args.rate <= 0:
        parser.error("--minutes and --rate must be positive")
    with private_home(args.home, args.keep):
        return run(args)


if __name__ == "__main__":
    sys.exit(main())
