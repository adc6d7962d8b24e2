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

Setup, in a private FLOWPILOT_HOME: the embedded PostgreSQL, migrations, the demo seed (one
published 3-step workflow) plus --workflows more published workflows, so the index read and
location build see a realistic number of jobs.

Run from the project root:

    .venv/bin/python bench/run_start.py
    .venv/bin/python bench/run_start.py --workflows 1000 --repeat 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, database_and_children, machine, private_home

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflows", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--home", type=Path, help="FLOWPILOT_HOME to use (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep FLOWPILOT_HOME (and its logs)")
    args = parser.parse_args(argv)
    with private_home(args.home, args.keep), database_and_children():
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
