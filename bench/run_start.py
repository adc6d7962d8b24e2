#!/usr/bin/env python
"""Where a run worker's start-up seconds go: each stage a Dagster run worker passes through
before its first op, timed in fresh Python processes (the way the default run launcher starts
a worker), cumulatively, median of --repeat.

  python          interpreter start (`python -c pass`)
  dagster         + `import dagster`
  django          + Django set up with FlowPilot's settings (apps, models)
  location        + `import orchestration.definitions` (the code location: the published-job
                    index read, sensors and schedules built; jobs stay lazy)
  one job         + building one published workflow's job (spec read + render)
  execute         + `execute_in_process` of that 3-step job (the steps themselves)

Then the same 3-step run launched --runs times, one after the other, through a real
DagsterInstance on the embedded PostgreSQL with each run launcher, p50/p95 of:

  launch -> first step   `instance.launch_run` called -> the first STEP_START event (for the
                         warm launcher: fork, instance, job load, run start)
  launch -> run end      `instance.launch_run` called -> RUN_SUCCESS

  default   Dagster's DefaultRunLauncher: the code server (a gRPC server, as `dagster dev`
            starts it) spawns a fresh run worker process per run
  warm      orchestration.run_launcher.WarmRunLauncher: a fork of a pre-imported zygote
            (one warm-up run first, which starts the zygote)

and the cost of one iteration of the run-queue daemon (QueuedRunCoordinatorDaemon with
FlowPilotRunCoordinator, empty queue): what `dequeue_interval_seconds` trades against latency.

Setup, in a private FLOWPILOT_HOME: the embedded PostgreSQL, migrations, the demo seed (one
published 3-step workflow) plus --workflows more published workflows, so the index read and
location build see a realistic number of jobs.

Run from the project root:

    .venv/bin/python bench/run_start.py
    .venv/bin/python bench/run_start.py --workflows 1000 --repeat 3 --runs 40
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, database_and_children, machine, percentile, private_home

JOB = "demo__hello_flowpilot"

STAGES = {
    "python": "pass",
    "dagster": "import dagster",
    "django": (
        "import dagster\n"
        "from resources.django_setup import ensure_django\n"
        "ensure_django('control_plane.settings.dev')"
    ),
    "location": (
        "import dagster\n"
        "from resources.django_setup import ensure_django\n"
        "ensure_django('control_plane.settings.dev')\n"
        "import orchestration.definitions"
    ),
    "one job": (
        "import dagster\n"
        "from resources.django_setup import ensure_django\n"
        "ensure_django('control_plane.settings.dev')\n"
        "import orchestration.definitions as d\n"
        "d.defs.get_job('demo__hello_flowpilot')"
    ),
}


def timed_process(code: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True
        )
        if done.returncode:
            raise SystemExit(f"stage failed:\n{code}\n{done.stderr[-2000:]}")
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def publish_many(count: int) -> None:
    from control_plane.core.tenancy import tenant_context
    from control_plane.organizations import services as organization_services
    from control_plane.users.models import User
    from control_plane.workflows import services as workflow_services
    from tests.factories import THREE_STEPS

    if not count:
        return
    user = User.objects.create_user("many@bench.test", "bench-pass-1234", email_verified=True)
    organization = organization_services.organization_create(name="Many", owner=user)
    started = time.monotonic()
    with tenant_context(organization.pk):
        for index in range(count):
            workflow = workflow_services.workflow_create(
                organization=organization,
                created_by=user,
                name=f"W{index}",
                slug=f"w{index}",
                definition=THREE_STEPS,
            )
            workflow_services.workflow_publish(workflow=workflow, published_by=user)
    print(f"published {count} more workflows in {time.monotonic() - started:.1f}s")


def _storage(cfg) -> dict:
    return {"storage": {"postgres": {"postgres_url": cfg.dagster_pg_url}}}


def _warm_launcher() -> dict:
    return {
        "run_launcher": {
            "module": "orchestration.run_launcher",
            "class": "WarmRunLauncher",
            "config": {"settings_module": "control_plane.settings.dev"},
        }
    }


def _run_once(instance, workspace, remote_job, job, run_config: dict) -> tuple[float, ...]:
    """(launch -> first step, launch -> run end, run start -> end) in seconds for one run."""
    from dagster import DagsterEventType
    from dagster._core.test_utils import poll_for_finished_run

    run = instance.create_run_for_job(
        job_def=job,
        run_config=run_config,
        tags=dict(job.tags),
        remote_job_origin=remote_job.get_remote_origin(),
        job_code_origin=remote_job.get_python_origin(),
    )
    started = time.time()
    instance.launch_run(run.run_id, workspace)
    finished = poll_for_finished_run(instance, run.run_id, timeout=300)
    if not finished.is_success:
        raise SystemExit(f"run {run.run_id} ended {finished.status}")
    first_step = instance.get_records_for_run(
        run_id=run.run_id, of_type=DagsterEventType.STEP_START, limit=1
    ).records[0]
    end = instance.get_records_for_run(
        run_id=run.run_id, of_type=DagsterEventType.RUN_SUCCESS, limit=1
    ).records[0]
    record = instance.get_run_record_by_id(run.run_id)
    return (
        first_step.event_log_entry.timestamp - started,
        end.event_log_entry.timestamp - started,
        record.end_time - record.start_time,
    )


def launchers(cfg, runs: int, run_config: dict) -> dict[str, list[tuple[float, ...]]]:
    """Each launcher's timings over `runs` sequential runs of the demo job."""
    from dagster._core.test_utils import create_test_daemon_workspace_context, instance_for_test
    from dagster._core.workspace.load_target import ModuleTarget

    from orchestration.repository import make_repository
    from resources.control_plane import ControlPlaneResource

    job = make_repository(ControlPlaneResource()).get_job(JOB)
    target = ModuleTarget("orchestration.definitions", "defs", str(ROOT), "flowpilot")
    results: dict[str, list[tuple[float, ...]]] = {}
    for name, overrides in (("default", {}), ("warm", _warm_launcher())):
        with (
            instance_for_test(overrides={**_storage(cfg), **overrides}) as instance,
            create_test_daemon_workspace_context(target, instance) as context,
        ):
            workspace = context.create_request_context()
            remote_job = (
                workspace.get_code_location("flowpilot")
                .get_repository("flowpilot")
                .get_full_job(JOB)
            )
            _run_once(instance, workspace, remote_job, job, run_config)  # warm-up
            results[name] = [
                _run_once(instance, workspace, remote_job, job, run_config) for _ in range(runs)
            ]
    return results


def dequeue_cost(cfg, iterations: int) -> tuple[float, float]:
    """(wall, CPU) seconds of one run-queue daemon iteration with an empty queue."""
    from dagster._core.test_utils import create_test_daemon_workspace_context, instance_for_test
    from dagster._core.workspace.load_target import ModuleTarget
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
        QueuedRunCoordinatorDaemon,
    )

    coordinator = {
        "run_coordinator": {
            "module": "orchestration.run_coordinator",
            "class": "FlowPilotRunCoordinator",
            "config": {
                "dequeue_interval_seconds": 1,
                "settings_module": "control_plane.settings.dev",
            },
        }
    }
    target = ModuleTarget("orchestration.definitions", "defs", str(ROOT), "flowpilot")
    with (
        instance_for_test(overrides={**_storage(cfg), **coordinator}) as instance,
        create_test_daemon_workspace_context(target, instance) as context,
    ):
        daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
        list(daemon.run_iteration(context))  # warm-up: quotas read, caches filled
        wall, cpu = [], []
        for _ in range(iterations):
            started, started_cpu = time.perf_counter(), time.process_time()
            list(daemon.run_iteration(context))
            wall.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
    return statistics.median(wall), statistics.median(cpu)


def print_launchers(results: dict[str, list[tuple[float, ...]]]) -> None:
    print(f"\nRun launchers, {len(results['warm'])} sequential runs each of {JOB} (3 steps)")
    columns = ("launch -> first step", "launch -> run end", "run start -> end")
    print(f"  {'':<9}" + "".join(f" {c:>22}" for c in columns))
    print(f"  {'launcher':<9}" + f" {'p50':>12} {'p95':>9}" * len(columns))
    for name, timings in results.items():
        cells = ""
        for index in range(len(columns)):
            values = [t[index] for t in timings]
            cells += f" {percentile(values, 0.5):>10.3f} s {percentile(values, 0.95):>7.3f} s"
        print(f"  {name:<9}{cells}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflows", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--runs", type=int, default=20, help="runs per launcher (p50/p95)")
    parser.add_argument("--dequeue-iterations", type=int, default=50)
    parser.add_argument("--home", type=Path, help="FLOWPILOT_HOME to use (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep FLOWPILOT_HOME (and its logs)")
    args = parser.parse_args(argv)
    with private_home(args.home, args.keep), database_and_children() as (cfg, _children):
        import os

        os.environ["DAGSTER_URL"] = "http://127.0.0.1:9"  # publish's reload: refused at once
        from control_plane.core.seed import seed_demo

        seed_demo()
        publish_many(args.workflows)
        from flowpilot.echo_server import EchoServer

        with EchoServer() as echo:
            stages = dict(STAGES)
            stages["execute"] = (
                stages["one job"].replace("d.defs.get_job", "job = d.defs.get_job")
                + "\nfrom dagster import DagsterInstance\n"
                f"result = job.execute_in_process(run_config={{'inputs': {{'name': 'x', "
                f"'url': '{echo.url}/echo'}}}}, instance=DagsterInstance.ephemeral())\n"
                "assert result.success"
            )
            print(f"\nRun worker start-up, fresh processes, median of {args.repeat}")
            print(f"machine: {machine()}; {args.workflows + 1} published workflows")
            print(f"  {'stage':<10} {'cumulative':>11} {'this stage':>11}")
            previous = 0.0
            for name, code in stages.items():
                total = timed_process(code, args.repeat)
                print(f"  {name:<10} {total:>9.2f} s {total - previous:>9.2f} s")
                previous = total
            sys.stdout.flush()
            run_config = {"inputs": {"name": "x", "url": f"{echo.url}/echo"}}
            print_launchers(launchers(cfg, args.runs, run_config))
        wall, cpu = dequeue_cost(cfg, args.dequeue_iterations)
        print(
            f"\nRun-queue daemon iteration, empty queue, median of {args.dequeue_iterations}:"
            f" {wall * 1000:.1f} ms wall, {cpu * 1000:.1f} ms CPU in the daemon process"
        )
        print(
            f"  dequeue_interval_seconds: 1 -> about one iteration a second: {cpu * 100:.2f}% of a"
            " core in the daemon plus its queries in PostgreSQL; a queued run waits 0.5 s on"
            " average (about 1 s at most)"
        )
        print(
            f"  dequeue_interval_seconds: 0 -> no wait at all: ~{1 / wall:.0f} iterations a"
            f" second, {cpu / wall * 100:.0f}% of a core in the daemon and PostgreSQL busy"
            " without a pause, to save 0.5 s on average (the setting is an integer)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
