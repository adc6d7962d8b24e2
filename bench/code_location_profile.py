#!/usr/bin/env python
"""Where one code location's load time goes (bench/code_location.py --profile), in one fresh
process over the benchmark's real database: imports, Django, the index query, make_repository,
building the jobs, RepositorySnap, and serializing every JobDataSnap (what the code server
answers the webserver's ExternalJob). `run_profile` starts this file as that process
(`--worker SHARD SHARDS`); FLOWPILOT_BENCH_CPROFILE=FILE also writes cProfile stats of the last
three steps."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT


def worker_profile(shard: int, shards: int) -> dict:
    timings: dict[str, float] = {}
    start = time.perf_counter()
    import dagster  # noqa: F401
    from dagster._core.remote_representation.external_data import JobDataSnap, RepositorySnap
    from dagster._serdes import serialize_value

    timings["import dagster"] = time.perf_counter() - start

    start = time.perf_counter()
    from resources.django_setup import ensure_django

    ensure_django("control_plane.settings.dev")
    import orchestration.definitions  # noqa: F401
    from orchestration.repository import make_repository
    from resources.control_plane import ControlPlaneResource

    timings["django + FlowPilot imports"] = time.perf_counter() - start

    control_plane = ControlPlaneResource()
    start = time.perf_counter()
    index = control_plane.published_job_index(shard=shard, shards=shards)
    timings["index query (alone)"] = time.perf_counter() - start

    start = time.perf_counter()
    repo = make_repository(control_plane, shard=shard, shards=shards)
    timings["make_repository (index, schedules, sensors)"] = time.perf_counter() - start

    profiler = None
    if os.environ.get("FLOWPILOT_BENCH_CPROFILE"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    start = time.perf_counter()
    repo.load_all_definitions()
    jobs = repo.get_all_jobs()
    timings["build all jobs (spec reads + render)"] = time.perf_counter() - start

    start = time.perf_counter()
    repo_snap = serialize_value(RepositorySnap.from_def(repo, defer_snapshots=True))
    timings["RepositorySnap (deferred) + serialize"] = time.perf_counter() - start

    start = time.perf_counter()
    size = 0
    for job in jobs:
        size += len(serialize_value(JobDataSnap.from_job_def(job, include_parent_snapshot=True)))
    timings["JobDataSnap x jobs + serialize"] = time.perf_counter() - start
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(os.environ["FLOWPILOT_BENCH_CPROFILE"])
    return {
        "timings": timings,
        "jobs": len(jobs),
        "index": len(index),
        "repo_snap_bytes": len(repo_snap),
        "job_snap_bytes": size,
    }


def run_profile(shard: int, shards: int, cprofile: Path | None = None) -> None:
    from flowpilot import config, processes

    env = processes.child_env(config.load(), FLOWPILOT_CODE_SHARDS=str(shards))
    if cprofile:
        env["FLOWPILOT_BENCH_CPROFILE"] = str(cprofile.resolve())
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "bench")])
    args = [sys.executable, str(Path(__file__).resolve()), "--worker", str(shard), str(shards)]
    started = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"profile worker failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"\nprofile: shard {shard} of {shards}, {result['jobs']:,} jobs, one fresh process"
        f" (wall {wall:.2f} s)"
    )
    for label, seconds in result["timings"].items():
        print(f"  {label:<46} {seconds:>7.2f} s")
    print(
        f"  serialized: repository {result['repo_snap_bytes'] / 2**20:.1f} MiB,"
        f" job snapshots {result['job_snap_bytes'] / 2**20:.1f} MiB"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", nargs=2, type=int, required=True, metavar=("SHARD", "SHARDS"))
    print(json.dumps(worker_profile(*parser.parse_args().worker)))
