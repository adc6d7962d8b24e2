"""The one door from Dagster into the control plane's data. Everything Dagster reads or writes
there goes through these methods, which call the control plane's services and selectors."""

from __future__ import annotations

from typing import Any

from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from orchestration.steps.definition import PublishedJob, WorkflowSpec
from orchestration.steps.templating import Variables
from resources.django_setup import ensure_django


def _db():
    """Drop connections the database closed meanwhile (long-lived daemon and code server)."""
    from django.db import close_old_connections, connection

    if not connection.in_atomic_block:
        close_old_connections()


class ControlPlaneResource(ConfigurableResource):
    settings_module: str = "control_plane.settings.dev"

    _executions: dict[str, int] = PrivateAttr(default_factory=dict)
    _variables: dict[str, Variables] = PrivateAttr(default_factory=dict)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        ensure_django(self.settings_module)

    def _ready(self) -> None:
        ensure_django(self.settings_module)
        _db()

    # Housekeeping (system tasks, not tenant data).
    def identity_cleanup(self) -> dict[str, int]:
        self._ready()
        from control_plane.users.services import identity_cleanup

        return identity_cleanup()

    # Code location: what to render.
    def published_job_index(self, *, shard: int = 0, shards: int = 1) -> dict[str, int]:
        """Every organization's jobs, or those of code-location shard `shard` of `shards`."""
        self._ready()
        from control_plane.workflows.selectors import published_job_index

        return published_job_index(shard=shard, shards=shards)

    def published_jobs(self, *, shard: int = 0, shards: int = 1) -> dict[str, PublishedJob]:
        """{job name: (version id, render stamp)}: the index with what each job renders from."""
        self._ready()
        from control_plane.workflows.selectors import published_jobs

        return published_jobs(shard=shard, shards=shards)

    def schedule_index(self) -> list[dict]:
        self._ready()
        from control_plane.workflows.selectors import schedule_index

        return schedule_index()

    def workflow_spec(self, version_id: int) -> WorkflowSpec:
        self._ready()
        from control_plane.workflows.selectors import workflow_spec

        return workflow_spec(version_id=version_id)

    def workflow_specs(self, version_ids: list[int]) -> dict[int, WorkflowSpec]:
        self._ready()
        from control_plane.workflows.selectors import workflow_specs

        return workflow_specs(version_ids=version_ids)

    # Trigger sensor.
    def pending_trigger_events(
        self, *, after_id: int, stale_seconds: float, shard: int = 0, shards: int = 1
    ) -> list[dict]:
        self._ready()
        from control_plane.executions.services import trigger_events_pending

        return trigger_events_pending(
            after_id=after_id, stale_seconds=stale_seconds, shard=shard, shards=shards
        )

    def trigger_events_launch_info(
        self, event_ids: list[int], *, stale_seconds: float
    ) -> dict[int, dict]:
        self._ready()
        from control_plane.executions.selectors import trigger_events_launch_info

        return trigger_events_launch_info(event_ids=event_ids, stale_seconds=stale_seconds)

    # Schedules: a tick becomes a TriggerEvent (the service sets the tenant context itself).
    def schedule_fire(self, trigger_id: int, scheduled_for: str) -> dict[str, Any]:
        self._ready()
        from control_plane.executions.schedules import schedule_fire

        return schedule_fire(trigger_id=trigger_id, scheduled_for=scheduled_for)

    # Run queue: per-organization concurrency.
    def concurrent_run_limits(self) -> dict[str, int]:
        self._ready()
        from control_plane.organizations.selectors import concurrent_run_limits

        return concurrent_run_limits()

    # Ops and run-status sensors touch one organization's rows: the run's `flowpilot/org` tag
    # (or the spec's organization id) sets the tenant context first.
    def _organization_id(self, tags: dict[str, str]) -> int | None:
        from control_plane.executions.services import TAG_ORG
        from control_plane.organizations.models import Organization

        slug = tags.get(TAG_ORG)
        if not slug:
            return None
        return Organization.objects.filter(slug=slug).values_list("pk", flat=True).first()

    def execution_for_run(self, *, run_id: str, tags: dict[str, str], inputs: dict) -> int:
        if run_id not in self._executions:
            self._ready()
            from control_plane.core.tenancy import tenant_context
            from control_plane.executions.services import execution_start_for_run

            organization_id = self._organization_id(tags)
            if organization_id is None:
                raise ValueError(f"run {run_id} has no known flowpilot/org tag")
            with tenant_context(organization_id):
                self._executions[run_id] = execution_start_for_run(
                    run_id=run_id, tags=dict(tags), inputs=inputs
                )
        return self._executions[run_id]

    def variables_for_run(
        self, *, run_id: str, organization_id: int, workflow_id: int
    ) -> Variables:
        """The run's `vars` (the workflow's own over the organization's), secrets decrypted,
        read once per run so every step of it sees the same values. They stay in this process:
        nothing of them goes into run config, tags or events."""
        if run_id not in self._variables:
            self._ready()
            from control_plane.core.tenancy import tenant_context
            from control_plane.workflows.variables import run_variables

            with tenant_context(organization_id):
                values, secret = run_variables(
                    organization_id=organization_id, workflow_id=workflow_id
                )
            self._variables[run_id] = Variables(values, secret=secret)
        return self._variables[run_id]

    def connector_credentials(
        self, *, run_id: str, organization_id: int, name: str
    ) -> dict[str, Any]:
        """The decrypted credentials of the organization's connector `name`, for the step that
        names it. Read when the step runs (a rotated token applies to the next step); they stay
        in this process: never in run config, tags, logs or events."""
        self._ready()
        from control_plane.connectors.selectors import connector_credentials
        from control_plane.core.errors import NotFoundError
        from control_plane.core.tenancy import tenant_context
        from orchestration.steps.base import StepFailure

        try:
            with tenant_context(organization_id):
                return connector_credentials(organization_id=organization_id, name=name)
        except NotFoundError as exc:
            raise StepFailure(exc.message) from None

    def step_started(self, *, organization_id: int, **kwargs: Any) -> None:
        self._ready()
        from control_plane.core.tenancy import tenant_context
        from control_plane.executions.services import step_started

        with tenant_context(organization_id):
            step_started(organization_id=organization_id, **kwargs)

    def step_finished(self, *, organization_id: int, **kwargs: Any) -> None:
        self._ready()
        from control_plane.core.tenancy import tenant_context
        from control_plane.executions.services import step_finished

        with tenant_context(organization_id):
            step_finished(organization_id=organization_id, **kwargs)

    def execution_finished(
        self, *, run_id: str, run_status: str, error: str = "", tags: dict | None = None
    ) -> int | None:
        """None for runs that are not FlowPilot executions (no known organization)."""
        self._ready()
        from control_plane.core.tenancy import tenant_context
        from control_plane.executions.services import execution_finish

        organization_id = self._organization_id(tags or {})
        if organization_id is None:
            return None
        with tenant_context(organization_id):
            return execution_finish(run_id=run_id, run_status=run_status, error=error, tags=tags)

    # Trigger sensor: the claim and the sweep it shares with the control plane's fast path
    # (control_plane/executions/launch.py). System writes across organizations.
    def trigger_launch_stale_seconds(self) -> float:
        """Seconds after its claim that a `launching` event is swept (settings)."""
        self._ready()
        from django.conf import settings

        return float(settings.FLOWPILOT_LAUNCH_STALE_SECONDS)

    def trigger_events_claim(self, event_ids: list[int]) -> list[int]:
        """Claim pending events (`pending → launching`); the ids this call won."""
        self._ready()
        from control_plane.executions.launch import trigger_events_claim

        return sorted(trigger_events_claim(event_ids=event_ids))

    def trigger_events_stale(
        self, *, stale_seconds: float, job_names: list[str] | None = None
    ) -> list[dict]:
        """Claims older than `stale_seconds` (of these jobs only, when given)."""
        self._ready()
        from control_plane.executions.launch import trigger_events_stale

        return trigger_events_stale(stale_seconds=stale_seconds, job_names=job_names)

    def trigger_events_reclaim(self, claims: dict[int, Any]) -> list[int]:
        """Claim stale events again ({event id: claimed_at as read}); the ids this call won."""
        self._ready()
        from control_plane.executions.launch import trigger_events_reclaim

        return sorted(trigger_events_reclaim(claims=claims))

    def trigger_events_mark_launched(self, runs: dict[int, str]) -> list[int]:
        """Events whose run exists ({event id: run id}) → launched; the ids marked."""
        self._ready()
        from control_plane.executions.launch import trigger_events_mark_launched

        return trigger_events_mark_launched(runs=runs)

    # Ops: the execution a run records into, and its log.
    def execution_claim(
        self,
        *,
        run_id: str,
        tags: dict[str, str],
        inputs: dict,
        parent_run_id: str | None = None,
        step_keys: list[str] | None = None,
    ) -> int:
        """Like `execution_for_run`, knowing what Dagster says about a re-execution: its
        parent run, and the steps it runs (the others are taken from the parent execution).
        Once per run in this process."""
        if run_id not in self._executions:
            self._ready()
            from control_plane.core.tenancy import tenant_context
            from control_plane.executions.services import execution_start_for_run

            organization_id = self._organization_id(tags)
            if organization_id is None:
                raise ValueError(f"run {run_id} has no known flowpilot/org tag")
            with tenant_context(organization_id):
                self._executions[run_id] = execution_start_for_run(
                    run_id=run_id,
                    tags=dict(tags),
                    inputs=inputs,
                    parent_run_id=parent_run_id,
                    step_keys=step_keys,
                )
        return self._executions[run_id]

    def execution_log_append(
        self, *, organization_id: int, execution_id: int, lines: list[dict]
    ) -> int:
        """Append lines (already redacted) to an execution's log, in one INSERT."""
        self._ready()
        from control_plane.core.tenancy import tenant_context
        from control_plane.executions.logs import execution_log_write

        with tenant_context(organization_id):
            return execution_log_write(
                organization_id=organization_id, execution_id=execution_id, lines=lines
            )
