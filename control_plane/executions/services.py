"""Writes for executions: starting a workflow (a TriggerEvent committed with its execution), and
the records the Dagster side makes as a run progresses."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connections, router, transaction
from django.db.models import Q
from django.utils import timezone

from control_plane.core.errors import ApplicationError, ConflictError
from control_plane.core.tenancy import system_database
from control_plane.executions.models import ExecutionStep, TriggerEvent, WorkflowExecution
from control_plane.organizations.services import quota_limits
from control_plane.users.models import User
from control_plane.workflows.models import Workflow, WorkflowTrigger, WorkflowVersion
from orchestration.steps.definition import WorkflowDefinition, coerce_inputs, job_name_for

log = logging.getLogger(__name__)

TAG_ORG = "flowpilot/org"
TAG_WORKFLOW = "flowpilot/workflow"
TAG_VERSION = "flowpilot/version"
TAG_EVENT = "flowpilot/event"
TAG_EXECUTION = "flowpilot/execution"
_NOT_LAUNCHED = (TriggerEvent.Status.PENDING, TriggerEvent.Status.LAUNCHING)


def _month_bounds(now: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar month `now` falls in: its first instant and the next month's."""
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start, (start + timedelta(days=32)).replace(day=1)


def _runs_quota_check(*, workflow: Workflow) -> None:
    """Refuse a run past the organization's `runs_per_month`. The count is taken under a
    transaction-scoped advisory lock per organization, held until the caller commits, so
    concurrent triggers queue here instead of each seeing room for one more."""
    limit = quota_limits(organization=workflow.organization)["runs_per_month"]
    if limit is None:
        return
    using = router.db_for_write(WorkflowExecution)
    with connections[using].cursor() as cursor:
        key = f"quota:runs_per_month:{workflow.organization_id}"
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [key])
    now = timezone.now()
    month_start, resets_at = _month_bounds(now)
    used = (
        WorkflowExecution.objects.using(using)
        .filter(organization_id=workflow.organization_id, created_at__gte=month_start)
        .count()
    )
    if used >= limit:
        retry_after = max(1, math.ceil((resets_at - now).total_seconds()))
        raise ApplicationError(
            f"quota runs_per_month exceeded: {used} of {limit} runs this month; it resets at "
            f"{resets_at.isoformat()}",
            code="quota_exceeded",
            status_code=429,
            details=[
                {
                    "quota": "runs_per_month",
                    "limit": limit,
                    "used": used,
                    "resets_at": resets_at.isoformat(),
                }
            ],
            headers={"Retry-After": str(retry_after)},
        )


@transaction.atomic
def workflow_run(
    *,
    workflow: Workflow,
    inputs: dict[str, Any] | None = None,
    kind: str = TriggerEvent.Kind.MANUAL,
    triggered_by: User | None = None,
    payload: dict[str, Any] | None = None,
    trigger: WorkflowTrigger | None = None,
) -> WorkflowExecution:
    """Start the latest published version: one TriggerEvent and its queued execution, in one
    transaction with the quota check, so a refused run writes nothing. The trigger sensor turns
    the committed event into exactly one Dagster run. A `trigger`'s own inputs are defaults
    that the given ones override."""
    version = workflow.versions.order_by("-number").first()
    if version is None:
        raise ConflictError(
            "the workflow has no published version",
            code="not_published",
            fields={"workflow": ["publish it first"]},
        )
    if workflow.status != Workflow.Status.ACTIVE:
        raise ConflictError(
            f"the workflow is {workflow.status}",
            code="not_active",
            fields={"status": [workflow.status]},
        )
    spec = WorkflowDefinition.model_validate(version.definition)
    if inputs is not None and not isinstance(inputs, dict):
        raise ApplicationError(
            "inputs must be an object", fields={"inputs": ["expected an object"]}
        )
    if trigger is not None:
        inputs = {**(trigger.inputs if isinstance(trigger.inputs, dict) else {}), **(inputs or {})}
    resolved, errors = coerce_inputs(spec, inputs or {})
    if errors:
        raise ApplicationError(
            "invalid inputs",
            code="invalid_inputs",
            fields={f"inputs.{name}": messages for name, messages in errors.items()},
        )
    _runs_quota_check(workflow=workflow)
    execution = WorkflowExecution.objects.create(
        organization_id=workflow.organization_id,
        workflow=workflow,
        version=version,
        inputs=resolved,
        created_by=triggered_by,
    )
    TriggerEvent.objects.create(
        organization_id=workflow.organization_id,
        workflow=workflow,
        version=version,
        execution=execution,
        kind=kind,
        payload=payload if payload is not None else {"inputs": resolved},
    )
    if trigger is not None:
        trigger.last_triggered_at = timezone.now()
        # Through the tenant manager: the caller's connection and transaction, whichever
        # database the trigger object was read from.
        WorkflowTrigger.objects.filter(pk=trigger.pk).update(
            last_triggered_at=trigger.last_triggered_at
        )
    return execution


def trigger_events_pending(*, after_id: int, stale_seconds: float, limit: int = 200) -> list[dict]:
    """Pending events for the trigger sensor: those past the cursor, and older ones still pending
    (committed out of id order, or whose run was never created)."""
    stale = timezone.now() - timedelta(seconds=stale_seconds)
    rows = (
        TriggerEvent.objects.unscoped()  # a system read across organizations
        .using(system_database())
        .filter(status=TriggerEvent.Status.PENDING)
        .filter(Q(id__gt=after_id) | Q(created_at__lt=stale))
        .select_related("organization", "workflow", "version", "execution")
        .order_by("id")[:limit]
    )
    return [
        {
            "event_id": event.pk,
            "execution_id": event.execution_id,
            "job_name": job_name_for(event.organization.slug, event.workflow.slug),
            "inputs": event.execution.inputs,
            "org": event.organization.slug,
            "version": event.version.number,
        }
        for event in rows
    ]


def _version_from_tags(tags: dict[str, str]) -> WorkflowVersion:
    return WorkflowVersion.objects.select_related("workflow").get(
        organization__slug=tags[TAG_ORG],
        workflow__slug=tags[TAG_WORKFLOW],
        number=int(tags[TAG_VERSION]),
    )


@transaction.atomic
class ExecutionCanceled(Exception):
    """The run's execution was canceled while the run was being requested: the run stops."""


def execution_start_for_run(*, run_id: str, tags: dict[str, str], inputs: dict[str, Any]) -> int:
    """The execution a Dagster run records into; returns its id. Runs started from FlowPilot
    carry the execution id as a tag; a run started or re-executed from the Dagster UI gets an
    execution of its own here."""
    now = timezone.now()
    existing = WorkflowExecution.objects.select_for_update().filter(dagster_run_id=run_id).first()
    if existing:
        return existing.pk
    execution = None
    if TAG_EXECUTION in tags:
        execution = (
            WorkflowExecution.objects.select_for_update()
            .filter(pk=int(tags[TAG_EXECUTION]), dagster_run_id__isnull=True)
            .first()
        )
    if execution is not None and execution.status == WorkflowExecution.Status.CANCELED:
        raise ExecutionCanceled(f"execution {execution.pk} was canceled before its run started")
    if execution is None:
        version = _version_from_tags(tags)
        execution = WorkflowExecution(
            organization_id=version.organization_id,
            workflow_id=version.workflow_id,
            version=version,
            inputs=inputs,
        )
    execution.dagster_run_id = run_id
    execution.status = WorkflowExecution.Status.RUNNING
    execution.started_at = execution.started_at or now
    execution.save()
    TriggerEvent.objects.filter(execution=execution, status__in=_NOT_LAUNCHED).update(
        status=TriggerEvent.Status.LAUNCHED, dagster_run_id=run_id, launched_at=now
    )
    return execution.pk


def step_started(
    *,
    execution_id: int,
    step_id: str,
    step_type: str,
    position: int,
    organization_id: int,
) -> None:
    """Record a step (re)starting."""
    step, created = ExecutionStep.objects.get_or_create(
        execution_id=execution_id,
        step_id=step_id,
        defaults={
            "organization_id": organization_id,
            "step_type": step_type,
            "position": position,
            "status": ExecutionStep.Status.RUNNING,
            "attempts": 1,
            "started_at": timezone.now(),
        },
    )
    if not created:
        ExecutionStep.objects.filter(pk=step.pk).update(
            status=ExecutionStep.Status.RUNNING,
            attempts=step.attempts + 1,
            started_at=timezone.now(),
            finished_at=None,
            error="",
        )


def step_finished(
    *,
    execution_id: int,
    step_id: str,
    step_type: str,
    position: int,
    status: str,
    output: Any = None,
    error: str = "",
    organization_id: int,
) -> None:
    ExecutionStep.objects.update_or_create(
        execution_id=execution_id,
        step_id=step_id,
        defaults={
            "organization_id": organization_id,
            "step_type": step_type,
            "position": position,
            "status": status,
            "output": output,
            "error": error,
            "finished_at": timezone.now(),
        },
    )


_RUN_TO_EXECUTION = {
    "SUCCESS": WorkflowExecution.Status.SUCCESS,
    "FAILURE": WorkflowExecution.Status.FAILURE,
    "CANCELED": WorkflowExecution.Status.CANCELED,
}


@transaction.atomic
def execution_finish(
    *, run_id: str, run_status: str, error: str = "", tags: dict | None = None
) -> int | None:
    """Close the execution of a finished Dagster run; steps that never ran are recorded as
    skipped, steps cut off mid-way as failed."""
    status = _RUN_TO_EXECUTION[run_status]
    execution = WorkflowExecution.objects.select_for_update().filter(dagster_run_id=run_id).first()
    if execution is None and tags and TAG_EXECUTION in tags:
        # The run failed before its first op recorded anything (e.g. could not start).
        execution = (
            WorkflowExecution.objects.select_for_update()
            .filter(pk=int(tags[TAG_EXECUTION]), dagster_run_id__isnull=True)
            .first()
        )
        if execution:
            execution.dagster_run_id = run_id
    if execution is None:
        return None
    if execution.status in WorkflowExecution.FINISHED:
        return execution.pk
    now = timezone.now()
    execution.status = status
    execution.error = error[:10000]
    execution.finished_at = now
    execution.started_at = execution.started_at or now
    execution.save()
    TriggerEvent.objects.filter(execution=execution, status__in=_NOT_LAUNCHED).update(
        status=TriggerEvent.Status.LAUNCHED, dagster_run_id=run_id, launched_at=now
    )
    recorded = set(execution.steps.values_list("step_id", flat=True))
    steps = WorkflowDefinition.model_validate(execution.version.definition).steps
    ExecutionStep.objects.bulk_create(
        ExecutionStep(
            organization_id=execution.organization_id,
            execution=execution,
            step_id=step.id,
            step_type=step.type,
            position=position,
            status=ExecutionStep.Status.SKIPPED,
            finished_at=now,
        )
        for position, step in enumerate(steps)
        if step.id not in recorded
    )
    execution.steps.filter(status=ExecutionStep.Status.RUNNING).update(
        status=ExecutionStep.Status.FAILURE,
        error=f"run ended ({run_status.lower()}) while the step was running",
        finished_at=now,
    )
    if status in _FINISH_EVENTS:
        _finish_event_emit(execution=execution, status=status)
    return execution.pk


_FINISH_EVENTS = {
    WorkflowExecution.Status.SUCCESS: "workflow.succeeded",
    WorkflowExecution.Status.FAILURE: "workflow.failed",
}


def _finish_event_emit(*, execution: WorkflowExecution, status: str) -> None:
    """Start the workflows subscribed to this one finishing, in the same transaction (their
    events commit with the execution's end or not at all); never the workflow itself."""
    from control_plane.executions.events import event_emit  # events imports this module

    event_emit(
        organization_id=execution.organization_id,
        event_type=_FINISH_EVENTS[status],
        payload={
            "execution_id": execution.pk,
            "workflow": execution.workflow.slug,
            "status": status,
        },
        source_workflow_id=execution.workflow_id,
    )
