"""`flowpilot demo`: the whole path once, end to end, and a report of what happened."""

from __future__ import annotations

import json
import time

from flowpilot import config, processes, runtime

WAIT_SECONDS = 180


def _short(value, limit: int = 160) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run() -> int:
    cfg = config.load()
    processes.sigterm_exits()
    daemon = None
    with runtime.database(cfg) as started_db:
        try:
            print(f"• database   {'started' if started_db else 'running'} ({cfg.home})")
            runtime.migrate()
            from control_plane.core.seed import seed_demo
            from control_plane.core.tenancy import tenant_context
            from control_plane.executions.models import WorkflowExecution
            from control_plane.executions.services import workflow_run
            from flowpilot.echo_server import EchoServer

            seed = seed_demo()
            print(
                f"• seeded     org '{seed.organization.slug}', user {seed.user.email}, "
                f"workflow '{seed.workflow.slug}' v{seed.version.number}"
            )
            log_dir = cfg.home / "logs"
            log_dir.mkdir(parents=True, exist_ok=True)
            env = processes.child_env(cfg)
            daemon = processes.spawn(
                processes.dagster_daemon_args(),
                env,
                log_file=log_dir / "demo-dagster-daemon.log",
            )
            print(f"• dagster    daemon started (log: {log_dir / 'demo-dagster-daemon.log'})")

            # The demo acts as its organization: row-level security shows it nothing else.
            def as_demo_org():
                return tenant_context(seed.organization.pk, user_id=seed.user.pk)

            with EchoServer() as echo:
                started = time.monotonic()
                # The same service a webhook calls: a committed TriggerEvent, then a Dagster run.
                with as_demo_org():
                    execution = workflow_run(
                        workflow=seed.workflow,
                        inputs={"name": "FlowPilot demo", "url": f"{echo.url}/echo"},
                        kind="webhook",
                        payload={"source": "flowpilot demo"},
                    )
                    event = execution.trigger_event.pk
                print(f"• triggered  execution {execution.pk} (trigger event {event})")
                while time.monotonic() - started < WAIT_SECONDS:
                    with as_demo_org():
                        execution.refresh_from_db()
                    if execution.status in WorkflowExecution.FINISHED:
                        break
                    if daemon.poll() is not None:
                        raise SystemExit(f"dagster-daemon exited early; see {log_dir}")
                    time.sleep(0.25)
                elapsed = time.monotonic() - started
            with as_demo_org():
                _report(cfg, execution, elapsed)
            return 0 if execution.status == WorkflowExecution.Status.SUCCESS else 1
        finally:
            if daemon is not None:
                processes.stop(daemon)


def _report(cfg: config.Config, execution, elapsed: float) -> None:
    from control_plane.core.seed import DEMO_EMAIL, DEMO_PASSWORD

    print()
    print(f"Execution {execution.pk}: {execution.status.upper()} in {elapsed:.1f}s")
    print(f"  Dagster run id: {execution.dagster_run_id}")
    if execution.error:
        print(f"  error: {execution.error}")
    for step in execution.steps.order_by("position"):
        took = ""
        if step.started_at and step.finished_at:
            took = f" {(step.finished_at - step.started_at).total_seconds() * 1000:.0f} ms"
        print(f"  - {step.step_id:<10} {step.step_type:<20} {step.status:<8}{took}")
        if step.output is not None:
            print(f"      output: {_short(step.output)}")
        if step.error:
            print(f"      error:  {step.error}")
    print()
    base = cfg.control_plane_url
    print(f"See it in both UIs: start them with `make up` (login {DEMO_EMAIL} / {DEMO_PASSWORD})")
    print(f"  control plane  {base}/api/v1/executions/{execution.pk}")
    print(f"  admin          {base}/admin/executions/workflowexecution/{execution.pk}/change/")
    print(f"  Dagster        {cfg.dagster_url}/runs/{execution.dagster_run_id}")
