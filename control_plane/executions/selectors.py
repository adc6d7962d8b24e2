from __future__ import annotations

from datetime import timedelta

from django.db.models import QuerySet
from django.utils import timezone

from control_plane.core.tenancy import system_database
from control_plane.executions.models import TriggerEvent, WorkflowExecution
from control_plane.organizations.models import Organization
from control_plane.workflows.models import RUN_PRIORITY


def execution_list(
    *, organization: Organization, workflow_id: int | None = None, status: str | None = None
) -> QuerySet[WorkflowExecution]:
    qs = WorkflowExecution.objects.filter(organization=organization).select_related(
        "workflow", "version"
    )
    if workflow_id:
        qs = qs.filter(workflow_id=workflow_id)
    if status:
        qs = qs.filter(status=status)
    return qs.order_by("-created_at", "-id")


def execution_get(*, organization: Organization, execution_id: int) -> WorkflowExecution:
    return (
        WorkflowExecution.objects.select_related("workflow", "version")
        .prefetch_related("steps")
        .get(organization=organization, pk=execution_id)
    )


def trigger_events_launch_info(*, event_ids: list[int], stale_seconds: float) -> dict[int, dict]:
    """For the trigger sensor, per pending event: its workflow's run priority, and whether a
    schedule launches it itself (a schedule event younger than `stale_seconds`: the sensor
    leaves it to the schedule, then sweeps it like any stale event). A system read, one query."""
    stale = timezone.now() - timedelta(seconds=stale_seconds)
    rows = (
        TriggerEvent.objects.unscoped()
        .using(system_database())
        .filter(pk__in=event_ids)
        .values_list("pk", "kind", "created_at", "workflow__priority")
    )
    return {
        pk: {
            "priority": RUN_PRIORITY[priority],
            "schedule": kind == TriggerEvent.Kind.SCHEDULE,
            "schedule_fresh": kind == TriggerEvent.Kind.SCHEDULE and created_at >= stale,
        }
        for pk, kind, created_at, priority in rows
    }
