"""A schedule tick -> one TriggerEvent. Dagster's schedule daemon asks for the event of a tick,
and may ask again for the same tick (a retried tick, a restarted daemon): the scheduled time is
kept in the event's payload, so a tick writes its event once and later asks get the same one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.db import connection, transaction

from control_plane.core.errors import ApplicationError
from control_plane.core.tenancy import system_database, tenant_context
from control_plane.executions import services
from control_plane.executions.models import TriggerEvent
from control_plane.workflows.models import RUN_PRIORITY, Workflow, WorkflowTrigger
from orchestration.steps.definition import job_name_for

# pg_advisory_xact_lock(int4, int4) namespace: serializes the check-then-insert of one trigger.
_LOCK_NAMESPACE = 0x5C4E


def _utc_iso(scheduled_for: str) -> str:
    """One spelling per instant, whatever offset the caller used."""
    moment = datetime.fromisoformat(scheduled_for)
    if moment.tzinfo is None:
        raise ValueError(f"scheduled_for needs a time zone: {scheduled_for!r}")
    return moment.astimezone(UTC).isoformat()


def _fired(event: TriggerEvent, workflow: Workflow, *, created: bool) -> dict[str, Any]:
    return {
        "event_id": event.pk,
        "execution_id": event.execution_id,
        "status": event.status,
        "created": created,
        "job_name": job_name_for(workflow.organization.slug, workflow.slug),
        "org": workflow.organization.slug,
        "inputs": event.execution.inputs,
        "priority": RUN_PRIORITY[workflow.priority],
    }


def schedule_fire(*, trigger_id: int, scheduled_for: str) -> dict[str, Any]:
    """The TriggerEvent of the trigger's tick at `scheduled_for` (an aware ISO timestamp),
    written now unless it exists. `{"skip": message}` when nothing may run: the trigger is gone
    or disabled, the workflow is not active, or the organization is over quota."""
    trigger = (
        WorkflowTrigger.objects.unscoped()  # a system lookup: the tick names no organization
        .using(system_database())
        .filter(pk=trigger_id, kind=WorkflowTrigger.Kind.SCHEDULE)
        .values("organization_id", "workflow_id", "enabled", "inputs")
        .first()
    )
    if trigger is None:
        return {"skip": f"schedule trigger {trigger_id} no longer exists"}
    if not trigger["enabled"]:
        return {"skip": f"schedule trigger {trigger_id} is disabled"}
    tick = _utc_iso(scheduled_for)
    with tenant_context(trigger["organization_id"]), transaction.atomic():
        workflow = Workflow.objects.select_related("organization").get(pk=trigger["workflow_id"])
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_LOCK_NAMESPACE, trigger_id])
        existing = (
            TriggerEvent.objects.filter(
                workflow=workflow,
                kind=TriggerEvent.Kind.SCHEDULE,
                payload__trigger_id=trigger_id,
                payload__scheduled_for=tick,
            )
            .select_related("execution")
            .first()
        )
        if existing is not None:
            return _fired(existing, workflow, created=False)
        inputs = trigger["inputs"] or {}
        try:
            execution = services.workflow_run(
                workflow=workflow,
                inputs=inputs,
                kind=TriggerEvent.Kind.SCHEDULE,
                payload={"inputs": inputs, "trigger_id": trigger_id, "scheduled_for": tick},
                trigger=WorkflowTrigger.objects.get(pk=trigger_id),
            )
        except ApplicationError as exc:  # not active, over quota, inputs no longer valid
            return {"skip": f"{workflow.slug}: {getattr(exc, 'message', exc)}"}
        event = TriggerEvent.objects.select_related("execution").get(execution=execution)
        return _fired(event, workflow, created=True)
