from __future__ import annotations

from django.db.models import QuerySet

from control_plane.executions.models import WorkflowExecution
from control_plane.organizations.models import Organization


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
