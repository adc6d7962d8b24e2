"""Writes for executions: starting a workflow (a TriggerEvent committed with its execution), and
the records the Dagster side makes as a run progresses."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connections, router, transaction
from django.utils import timezone

from control_plane.core.errors import ApplicationError, ConflictError
from control_plane.core.tenancy import system_database
from control_plane.executions.launch import fast_launch_on_commit, launch_rows, pending_filter
from control_plane.executions.logs import execution_log_write, log_line
from control_plane.executions.models import (
    ExecutionLog,
    ExecutionStep,
    TriggerEvent,
    WorkflowExecution,
)
from control_plane.organizations.services import quota_limits
from control_plane.users.models import User
from control_plane.workflows.models import Workflow, WorkflowTrigger, WorkflowVersion
from orchestration.steps.definition import WorkflowDefinition, coerce_inputs

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
    event = TriggerEvent.objects.create(
        organization_id=workflow.organization_id,
        workflow=workflow,
        version=version,
        execution=execution,
        kind=kind,
        payload=payload if payload is not None else {"inputs": resolved},
    )
    fast_launch_on_commit(event=event)  # its run is launched once this commits (not schedules)
    if trigger is not None:
        trigger.last_triggered_at = timezone.now()
        # Through the tenant manager: the caller's connection and transaction, whichever
        # database the trigger object was read from.
        WorkflowTrigger.objects.filter(pk=trigger.pk).update(
            last_triggered_at=trigger.last_triggered_at
        )
    return execution


def trigger_events_pending(
    *, after_id: int, stale_seconds: float, limit: int = 200, shard: int = 0, shards: int = 1
) -> list[dict]:
    """Pending events for the trigger sensor to claim, past `after_id` in id order; with
    `shards` > 1 only those of the organizations in code-location shard `shard` (the others are
    their own shard's sensor's). Left out: schedule events younger than `stale_seconds` (their
    schedule launches them), and with the fast path on, the events it launches while younger
    than its grace period."""
    events = (
        TriggerEvent.objects.unscoped()  # a system read across organizations
        .using(system_database())
        .filter(status=TriggerEvent.Status.PENDING, id__gt=after_id)
        .filter(pending_filter(stale_seconds=stale_seconds))
    )
    if shards > 1:
        from control_plane.workflows.selectors import shard_organization_ids

        events = events.filter(
            organization_id__in=shard_organization_ids(shard=shard, shards=shards)
        )
    return launch_rows(events.order_by("id")[:limit])


def _version_from_tags(tags: dict[str, str]) -> WorkflowVersion:
    return WorkflowVersion.objects.select_related("workflow").get(
        organization__slug=tags[TAG_ORG],
        workflow__slug=tags[TAG_WORKFLOW],
        number=int(tags[TAG_VERSION]),
    )


TAG_PARENT_RUN = "dagster/parent_run_id"  # Dagster's own, on every re-executed run
TAG_RESUME_RETRY = "dagster/is_resume_retry"  # Dagster's own, on a re-execution from failure


class ExecutionCanceled(Exception):
    """The run's execution was canceled while the run was being requested: the run stops."""


def _tag_id(tags: dict[str, str], key: str) -> int | None:
    value = str(tags.get(key, ""))
    return int(value) if value.isdigit() else None


def execution_launch_lock(*, execution_id: int) -> None:
    """Take the launch lock of an execution, held until the transaction ends. A control-plane
    re-run is launched in Dagster before its execution commits (control.execution_rerun holds
    this lock meanwhile); the run's first op and the run-status sensor take it too before they
    look the execution up, so they wait for the commit instead of missing the row."""
    using = router.db_for_write(WorkflowExecution)
    with connections[using].cursor() as cursor:
        key = f"flowpilot:execution:{execution_id}"
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [key])


@transaction.atomic
def execution_start_for_run(
    *,
    run_id: str,
    tags: dict[str, str],
    inputs: dict[str, Any],
    parent_run_id: str | None = None,
    step_keys: list[str] | None = None,
) -> int:
    """The execution a Dagster run records into, marked running; returns its id. Runs started
    from FlowPilot carry the execution id as a tag (a re-executed run also carries its parent's
    tags, so only an execution that has no run yet is claimed by the tag); a run started or
    re-executed from the Dagster UI gets an execution of its own here, linked by `rerun_of` to
    its parent run's. `step_keys` are the steps a re-execution runs (None: all of them): in a
    re-run, the others are taken from the parent execution as they ended there."""
    parent_run_id = parent_run_id or tags.get(TAG_PARENT_RUN) or None
    claimed_id = _tag_id(tags, TAG_EXECUTION)
    if parent_run_id and claimed_id is not None:
        execution_launch_lock(execution_id=claimed_id)
    execution = WorkflowExecution.objects.select_for_update().filter(dagster_run_id=run_id).first()
    if execution is not None and execution.status != WorkflowExecution.Status.QUEUED:
        return execution.pk  # started already, by another process of this run
    if execution is None and claimed_id is not None:
        execution = (
            WorkflowExecution.objects.select_for_update()
            .filter(pk=claimed_id, dagster_run_id__isnull=True)
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
        if parent_run_id:
            execution.rerun_of = (
                WorkflowExecution.objects.filter(dagster_run_id=parent_run_id).only("pk").first()
            )
            every = {
                step.id for step in WorkflowDefinition.model_validate(version.definition).steps
            }
            subset = step_keys is not None and not every <= set(step_keys)
            reused = subset or tags.get(TAG_RESUME_RETRY) == "true"
            execution.rerun_strategy = (
                WorkflowExecution.RerunStrategy.FROM_FAILURE
                if reused
                else WorkflowExecution.RerunStrategy.ALL
            )
    now = timezone.now()
    execution.dagster_run_id = run_id
    execution.status = WorkflowExecution.Status.RUNNING
    execution.started_at = execution.started_at or now
    execution.save()
    TriggerEvent.objects.filter(execution=execution, status__in=_NOT_LAUNCHED).update(
        status=TriggerEvent.Status.LAUNCHED, dagster_run_id=run_id, launched_at=now
    )
    lines = [log_line(f"run started (Dagster run {run_id})", at=now)]
    if execution.rerun_of_id:
        source = f", re-executing Dagster run {parent_run_id}" if parent_run_id else ""
        lines.append(
            log_line(
                f"re-run of execution {execution.rerun_of_id} "
                f"({execution.rerun_strategy or 'all'}{source})",
                at=now,
            )
        )
        if step_keys is not None:
            lines += _steps_reuse(execution=execution, executed=set(step_keys), now=now)
    execution_log_write(
        organization_id=execution.organization_id, execution_id=execution.pk, lines=lines
    )
    return execution.pk


_REUSABLE = (ExecutionStep.Status.SUCCESS, ExecutionStep.Status.SKIPPED)


def _steps_reuse(
    *, execution: WorkflowExecution, executed: set[str], now: datetime
) -> list[dict[str, Any]]:
    """Record the steps a re-execution does not run as they ended in the parent execution
    (Dagster hands their outputs on from the parent run); returns their log lines."""
    reused = [
        step
        for step in ExecutionStep.objects.filter(
            execution_id=execution.rerun_of_id, status__in=_REUSABLE
        ).order_by("position")
        if step.step_id not in executed
    ]
    ExecutionStep.objects.bulk_create(
        ExecutionStep(
            organization_id=execution.organization_id,
            execution=execution,
            step_id=step.step_id,
            step_type=step.step_type,
            position=step.position,
            status=step.status,
            attempts=0,
            output=step.output,
            started_at=step.started_at,
            finished_at=step.finished_at,
        )
        for step in reused
    )
    how = {
        ExecutionStep.Status.SUCCESS: "its output taken over",
        ExecutionStep.Status.SKIPPED: "skipped there",
    }
    return [
        log_line(
            f"step '{step.step_id}' reused from execution {execution.rerun_of_id} "
            f"({how[step.status]}), not run again",
            step_id=step.step_id,
            at=now,
        )
        for step in reused
    ]


def step_started(
    *,
    execution_id: int,
    step_id: str,
    step_type: str,
    position: int,
    organization_id: int,
    attempt: int = 1,
) -> None:
    """Record a step starting (attempt > 1: Dagster retries it), with its log line. One
    upsert and one insert."""
    now = timezone.now()
    ExecutionStep.objects.bulk_create(
        [
            ExecutionStep(
                organization_id=organization_id,
                execution_id=execution_id,
                step_id=step_id,
                step_type=step_type,
                position=position,
                status=ExecutionStep.Status.RUNNING,
                attempts=attempt,
                started_at=now,
            )
        ],
        update_conflicts=True,
        unique_fields=["execution", "step_id"],
        update_fields=["status", "attempts", "started_at", "finished_at", "error"],
    )
    if attempt > 1:
        line = log_line(
            f"step '{step_id}' retried (attempt {attempt})",
            step_id=step_id,
            level=ExecutionLog.Level.WARNING,
            at=now,
        )
    else:
        line = log_line(f"step '{step_id}' started", step_id=step_id, at=now)
    execution_log_write(organization_id=organization_id, execution_id=execution_id, lines=[line])


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
    logs: Iterable[dict[str, Any]] = (),
    detail: str = "",
) -> None:
    """Record a step's end: its status, output or error, and in the same batch the lines it
    logged (`logs`, redacted as in Dagster's log) and the line that says how it ended. A step
    skipped by its condition ends without starting; `detail` says why."""
    now = timezone.now()
    ExecutionStep.objects.bulk_create(
        [
            ExecutionStep(
                organization_id=organization_id,
                execution_id=execution_id,
                step_id=step_id,
                step_type=step_type,
                position=position,
                status=status,
                output=output,
                error=error,
                finished_at=now,
            )
        ],
        update_conflicts=True,
        unique_fields=["execution", "step_id"],
        update_fields=["status", "output", "error", "finished_at"],
    )
    if status == ExecutionStep.Status.FAILURE:
        end = log_line(f"step '{step_id}' failed: {error}", level=ExecutionLog.Level.ERROR, at=now)
    elif status == ExecutionStep.Status.SKIPPED:
        end = log_line(f"step '{step_id}' skipped" + (f": {detail}" if detail else ""), at=now)
    else:
        end = log_line(f"step '{step_id}' succeeded", at=now)
    execution_log_write(
        organization_id=organization_id,
        execution_id=execution_id,
        lines=[*({**line, "step_id": step_id} for line in logs), {**end, "step_id": step_id}],
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
    skipped, steps cut off mid-way as failed, and the run's end is logged. Steps a re-run took
    from its parent were recorded when it started, so they are not among those skipped."""
    status = _RUN_TO_EXECUTION[run_status]
    tags = tags or {}
    claimed_id = _tag_id(tags, TAG_EXECUTION)
    if tags.get(TAG_PARENT_RUN) and claimed_id is not None:
        execution_launch_lock(execution_id=claimed_id)  # a re-run still being committed
    execution = WorkflowExecution.objects.select_for_update().filter(dagster_run_id=run_id).first()
    if execution is None and claimed_id is not None:
        # The run failed before its first op recorded anything (e.g. could not start).
        execution = (
            WorkflowExecution.objects.select_for_update()
            .filter(pk=claimed_id, dagster_run_id__isnull=True)
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
    recorded = dict(execution.steps.values_list("step_id", "status"))
    steps = WorkflowDefinition.model_validate(execution.version.definition).steps
    not_run = [(position, step) for position, step in enumerate(steps) if step.id not in recorded]
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
        for position, step in not_run
    )
    cut_off = [step_id for step_id, s in recorded.items() if s == ExecutionStep.Status.RUNNING]
    cut_off_error = f"run ended ({run_status.lower()}) while the step was running"
    if cut_off:
        execution.steps.filter(step_id__in=cut_off).update(
            status=ExecutionStep.Status.FAILURE, error=cut_off_error, finished_at=now
        )
    lines = [
        log_line(f"step '{step.id}' did not run", step_id=step.id, at=now) for _, step in not_run
    ]
    lines += [
        log_line(
            f"step '{step_id}' failed: {cut_off_error}",
            step_id=step_id,
            level=ExecutionLog.Level.ERROR,
            at=now,
        )
        for step_id in cut_off
    ]
    if status == WorkflowExecution.Status.SUCCESS:
        lines.append(log_line("run succeeded", at=now))
    elif status == WorkflowExecution.Status.FAILURE:
        lines.append(
            log_line(
                f"run failed: {execution.error or 'no error message'}",
                level=ExecutionLog.Level.ERROR,
                at=now,
            )
        )
    else:
        lines.append(log_line("run canceled", level=ExecutionLog.Level.WARNING, at=now))
    execution_log_write(
        organization_id=execution.organization_id, execution_id=execution.pk, lines=lines
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
