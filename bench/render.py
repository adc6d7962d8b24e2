#!/usr/bin/env python
"""Rendering benchmark: the Dagster code location for N synthetic 5-step workflows.

What it measures, without a database (specs are built in memory, jobs with the real
`orchestration.rendering.build_job` through the real `orchestration.repository.make_repository`,
fed by a stub control plane that answers from a dict):

* full load, for each size N (default 100, 1,000 and 10,000 workflows):
    - specs      build N `WorkflowSpec` objects (stands in for the per-version DB read)
    - repo       `make_repository(...)`: the lazy `@repository` (one entry per job + 4 sensors)
    - load       `repo.load_all_definitions()`: what the gRPC code server does when it loads the
                 location; it builds every job
    - repo snap  `serialize_value(RepositorySnap.from_def(repo, defer_snapshots=True))`: the
                 `ExternalRepository` answer the daemon and the webserver ask for first
    - job snaps  `serialize_value(JobDataSnap.from_job_def(job, include_parent_snapshot=True))`
                 for every job: the `ExternalJob` answers they then fetch, one per job
* lazy, among N (default 10,000): build the lazy repository, then time `repo.get_job(name)` for
  one name (what a run worker does); the stub counts how many jobs were built.

Each measurement runs in a fresh subprocess, so the memory figures are independent.
Memory is reported as peak RSS growth: the process's VmHWM (peak resident set, from
/proc/self/status) at the end minus its VmRSS right after the imports. With --tracemalloc, each
size also runs a second time under tracemalloc and its peak of Python allocations is reported
(timings from that pass are not used: tracing slows Python down).

Run from the project root:

    .venv/bin/python bench/render.py                      # 100, 1,000, 10,000 + lazy
    .venv/bin/python bench/render.py --sizes 100 1000     # smaller
    .venv/bin/python bench/render.py --tracemalloc        # add tracemalloc peaks
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STEPS_PER_WORKFLOW = 5


# --- worker side (runs in the subprocess) -------------------------------------------------------


def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _rss_kib() -> int:
    value = _proc_status_kib("VmRSS")
    return value if value is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_rss_kib() -> int:
    value = _proc_status_kib("VmHWM")
    return value if value is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def synthetic_definition(index: int) -> dict[str, Any]:
    """A valid 5-step chain: template -> http -> template -> http -> template, each step's config
    referencing the previous step's output through templates."""
    return {
        "inputs": {
            "name": {"type": "string", "default": "world", "description": "Who to greet"},
            "url": {"type": "string", "description": "An HTTP endpoint to call"},
        },
        "steps": [
            {
                "id": "compose",
                "type": "transform.template",
                "name": "Compose",
                "config": {"template": f"Hello #{index}, {{{{ inputs.name }}}}!"},
            },
            {
                "id": "call",
                "type": "http.request",
                "name": "Call",
                "after": ["compose"],
                "config": {
                    "url": "{{ inputs.url }}",
                    "method": "POST",
                    "json_body": {"greeting": "{{ steps.compose.output.result }}"},
                },
            },
            {
                "id": "summarise",
                "type": "transform.template",
                "name": "Summarise",
                "after": ["call"],
                "config": {"template": "{{ steps.call.output.status_code }}"},
            },
            {
                "id": "notify",
                "type": "http.request",
                "name": "Notify",
                "after": ["summarise"],
                "config": {
                    "url": "{{ inputs.url }}",
                    "method": "POST",
                    "json_body": {
                        "summary": "{{ steps.summarise.output.result }}",
                        "greeting": "{{ steps.compose.output.result }}",
                    },
                },
            },
            {
                "id": "report",
                "type": "transform.template",
                "name": "Report",
                "after": ["notify"],
                "config": {"template": "{{ steps.notify.output.body.echo.summary }}"},
            },
        ],
    }


def synthetic_specs(count: int) -> dict[int, Any]:
    """{version id: WorkflowSpec}, spread over 10 organizations."""
    from orchestration.steps.definition import WorkflowSpec, content_hash, validate

    first = synthetic_definition(0)
    errors = validate(first)
    if errors:
        raise SystemExit(f"the synthetic definition is invalid: {errors}")
    specs: dict[int, Any] = {}
    for index in range(count):
        raw = synthetic_definition(index)
        version_id = index + 1
        specs[version_id] = WorkflowSpec(
            organization_id=index % 10 + 1,
            org_slug=f"org-{index % 10}",
            workflow_id=version_id,
            workflow_slug=f"workflow-{index:05d}",
            workflow_name=f"Workflow {index}",
            version_id=version_id,
            version=1,
            content_hash=content_hash(raw),
            definition=raw,
        )
    return specs


def workflow_data(repo: Any) -> Any:
    from orchestration.repository_data import workflow_data as data_of

    return data_of(repo)


def stub_control_plane(specs: dict[int, Any]) -> Any:
    """A ControlPlaneResource whose code-location reads come from `specs` (no database)."""
    from resources.control_plane import ControlPlaneResource

    class StubControlPlane(ControlPlaneResource):
        def published_jobs(self, *, shard: int = 0, shards: int = 1) -> dict[str, Any]:
            from orchestration.steps.definition import PublishedJob

            return {
                spec.job_name: PublishedJob(version_id, spec.stamp)
                for version_id, spec in specs.items()
            }

        def workflow_spec(self, version_id: int) -> Any:
            return specs[version_id]

        def schedule_index(self) -> list[dict]:
            return []

        def workflow_specs(self, version_ids: list[int]) -> dict[int, Any]:
            return {version_id: specs[version_id] for version_id in version_ids}

    return StubControlPlane()


def _make_repo(specs: dict[int, Any]) -> Any:
    from orchestration.repository import make_repository
    from resources.control_plane import ControlPlaneResource
    from resources.http import HttpResource

    resources = {"control_plane": ControlPlaneResource(), "http": HttpResource()}
    return make_repository(stub_control_plane(specs), resources)


def _import_everything() -> None:
    import dagster._core.remote_representation.external_data  # noqa: F401
    import dagster._serdes  # noqa: F401

    import orchestration.rendering  # noqa: F401
    import orchestration.repository  # noqa: F401


def _start_worker(mode: str, count: int, trace: bool):
    """What both workers do first: imports, the RSS baseline, the specs and the lazy repo."""
    _import_everything()
    result: dict[str, Any] = {"mode": mode, "n": count, "rss_base_kib": _rss_kib()}
    if trace:
        tracemalloc.start()
    timings: dict[str, float] = {}

    start = time.perf_counter()
    specs = synthetic_specs(count)
    timings["specs"] = time.perf_counter() - start

    start = time.perf_counter()
    repo = _make_repo(specs)
    timings["repo"] = time.perf_counter() - start
    return result, timings, specs, repo


def worker_full(count: int, trace: bool) -> dict[str, Any]:
    from dagster._core.remote_representation.external_data import JobDataSnap, RepositorySnap
    from dagster._serdes import serialize_value

    result, timings, specs, repo = _start_worker("full", count, trace)

    start = time.perf_counter()
    repo.load_all_definitions()
    jobs = repo.get_all_jobs()
    timings["load"] = time.perf_counter() - start
    built = len(workflow_data(repo).built_workflow_jobs())

    start = time.perf_counter()
    repo_snap = serialize_value(RepositorySnap.from_def(repo, defer_snapshots=True))
    timings["repo_snap"] = time.perf_counter() - start

    start = time.perf_counter()
    job_snap_bytes = 0
    for job in jobs:
        job_snap_bytes += len(
            serialize_value(JobDataSnap.from_job_def(job, include_parent_snapshot=True))
        )
    timings["job_snaps"] = time.perf_counter() - start

    timings["total"] = sum(timings.values())
    result.update(
        timings=timings,
        jobs=len(jobs),
        built=built,
        ops=sum(len(job.graph.node_defs) for job in jobs),
        repo_snap_bytes=len(repo_snap),
        job_snap_bytes=job_snap_bytes,
        rss_peak_kib=_peak_rss_kib(),
    )
    if trace:
        result["trace_peak_bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result


def worker_lazy(count: int, trace: bool) -> dict[str, Any]:
    result, timings, specs, repo = _start_worker("lazy", count, trace)

    name = specs[count // 2 + 1].job_name
    rss_before = _rss_kib()
    held = 0
    if trace:
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
    start = time.perf_counter()
    job = repo.get_job(name)
    timings["get_job"] = time.perf_counter() - start
    if trace:
        # The peak above what was already allocated before the call.
        result["trace_get_job_peak_bytes"] = tracemalloc.get_traced_memory()[1] - held

    start = time.perf_counter()
    repo.get_job(name)
    timings["get_job_again"] = time.perf_counter() - start

    result.update(
        timings=timings,
        job=job.name,
        built=len(workflow_data(repo).built_workflow_jobs()),
        rss_get_job_kib=_rss_kib() - rss_before,
        rss_peak_kib=_peak_rss_kib(),
    )
    if trace:
        result["trace_peak_bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result


# --- driver side ---------------------------------------------------------------------------------


def run_worker(mode: str, count: int, trace: bool, timeout: float) -> dict[str, Any]:
    args = [sys.executable, str(Path(__file__).resolve()), "--worker", mode, str(count)]
    if trace:
        args.append("--trace")
    pythonpath = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
    started = time.perf_counter()
    done = subprocess.run(
        args, cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=timeout
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"worker {mode} {count} failed with exit code {done.returncode}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall"] = wall
    return result


def _mib(kib: float) -> str:
    return f"{kib / 1024:,.1f} MiB"


def _fmt_s(seconds: float) -> str:
    if seconds < 0.001:
        return f"{seconds * 1e6:,.1f} µs"
    return f"{seconds * 1000:,.1f} ms" if seconds < 1 else f"{seconds:,.2f} s"


def machine() -> str:
    total = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = f", {int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs{total}, Python {sys.version.split()[0]}"


def report_full(result: dict[str, Any], traced: dict[str, Any] | None) -> None:
    t = result["timings"]
    n = result["n"]
    print(
        f"\n{n:,} workflows ({result['jobs']:,} jobs, {result['ops']:,} ops;"
        f" {result['built']:,} built by the stub)"
    )
    for key, label in (
        ("specs", "specs (pydantic)"),
        ("repo", "make_repository (lazy)"),
        ("load", "load_all_definitions (build jobs)"),
        ("repo_snap", "RepositorySnap (deferred) + serialize"),
        ("job_snaps", "JobDataSnap x N + serialize"),
        ("total", "total"),
    ):
        per_job = (
            f"  ({t[key] / n * 1000:.2f} ms/job)" if key in ("load", "job_snaps", "total") else ""
        )
        print(f"  {label:<40} {_fmt_s(t[key]):>12}{per_job}")
    growth = result["rss_peak_kib"] - result["rss_base_kib"]
    print(
        f"  {'peak RSS growth (VmHWM - RSS after imports)':<40} {_mib(growth):>12}"
        f"  (peak RSS {_mib(result['rss_peak_kib'])}, {growth / n:,.1f} KiB/job)"
    )
    print(
        f"  {'serialized snapshots':<40} {result['repo_snap_bytes'] / 2**20:,.1f} MiB repo"
        f" + {result['job_snap_bytes'] / 2**20:,.1f} MiB jobs"
    )
    if traced:
        peak = traced["trace_peak_bytes"]
        print(
            f"  {'tracemalloc peak (separate run)':<40} {peak / 2**20:>8,.1f} MiB"
            f"  ({peak / 1024 / n:,.1f} KiB/job)"
        )
    print(f"  {'subprocess wall time (incl. imports)':<40} {_fmt_s(result['wall']):>12}")


def report_lazy(result: dict[str, Any], traced: dict[str, Any] | None) -> None:
    t = result["timings"]
    print(f"\nOne job lazily among {result['n']:,} workflows (job {result['job']})")
    print(f"  {'specs (pydantic)':<40} {_fmt_s(t['specs']):>12}")
    print(f"  {'make_repository (lazy)':<40} {_fmt_s(t['repo']):>12}")
    print(f"  {'repo.get_job(name), first call':<40} {_fmt_s(t['get_job']):>12}")
    print(f"  {'repo.get_job(name), cached':<40} {_fmt_s(t['get_job_again']):>12}")
    print(f"  {'jobs built':<40} {result['built']:>12,}")
    growth = result["rss_peak_kib"] - result["rss_base_kib"]
    print(
        f"  {'peak RSS growth (VmHWM - RSS after imports)':<40} {_mib(growth):>12}"
        f"  (RSS growth across get_job {_mib(result['rss_get_job_kib'])})"
    )
    if traced:
        print(
            f"  {'tracemalloc peak (separate run)':<40} "
            f"{traced['trace_peak_bytes'] / 2**20:>8,.1f} MiB"
            f"  (get_job's own peak {traced['trace_get_job_peak_bytes'] / 2**20:,.2f} MiB)"
        )
    print(f"  {'subprocess wall time (incl. imports)':<40} {_fmt_s(result['wall']):>12}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1_000, 10_000])
    parser.add_argument("--lazy-size", type=int, default=10_000, help="0 to skip")
    parser.add_argument("--tracemalloc", action="store_true", help="also measure tracemalloc peak")
    parser.add_argument("--timeout", type=float, default=900.0, help="per subprocess, seconds")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        mode, count = args.worker[0], int(args.worker[1])
        worker = {"full": worker_full, "lazy": worker_lazy}[mode]
        print(json.dumps(worker(count, args.trace)))
        return 0

    print(f"FlowPilot render benchmark: {machine()}")
    print(f"{STEPS_PER_WORKFLOW}-step synthetic workflows; each figure from a fresh subprocess")
    sys.stdout.flush()
    for count in args.sizes:
        result = run_worker("full", count, False, args.timeout)
        traced = run_worker("full", count, True, args.timeout) if args.tracemalloc else None
        report_full(result, traced)
        sys.stdout.flush()
    if args.lazy_size:
        result = run_worker("lazy", args.lazy_size, False, args.timeout)
        traced = (
            run_worker("lazy", args.lazy_size, True, args.timeout) if args.tracemalloc else None
        )
        report_lazy(result, traced)
    return 0


if __name__ == "__main__":
    sys.exit(main())
