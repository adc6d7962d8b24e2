"""Acting on an execution from the control plane: cancel it, or re-run it.

Cancel: an execution whose run has not started yet is canceled here and now (its trigger event
is withdrawn, so the trigger sensor never launches it); a started one is terminated through
Dagster's GraphQL API, and the run-status sensor records the cancellation when Dagster confirms
it.

Re-run: a new execution (`rerun_of`, `rerun_strategy`, same version and inputs) whose run is
Dagster's re-execution of the finished one (`launchRunReexecution`), all steps or from the
failure; the steps it does not run are taken over from the parent when it starts."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from control_plane.core import dagster
from control_plane.core.errors import ApplicationError, ConflictError, NotFoundError
from control_plane.executions.models import TriggerEvent, WorkflowExecution
from control_plane.executions.services import (
    TAG_EVENT,
    TAG_EXECUTION,
    _runs_quota_check,
    execution_launch_lock,
)
from control_plane.users.models import User
from control_plane.workflows.models import Workflow

TERMINATE = """
mutation Terminate($runId: String!) {
  terminateRun(runId: $runId) {
    __typename
    ... on TerminateRunFailure { message }
    ... on RunNotFoundError { message }
    ... on PythonError { message }
  }
}
"""


class DagsterUnavailableError(ApplicationError):
    status_code = 503
    code = "dagster_unavailable"


@transaction.atomic
def execution_cancel(*, execution_id: int) -> WorkflowExecution:
    """Cancel an execution of the organization in context. Returns it: `canceled` when it never
    started, still `running` while Dagster stops the run."""
    execution = WorkflowExecution.objects.select_for_update().filter(pk=execution_id).first()
    if execution is None:
        raise NotFoundError("Execution not found.")
    if execution.status in WorkflowExecution.FINISHED:
        raise ConflictError(f"The execution already finished ({execution.status}).")
    if not execution.dagster_run_id:
        # A claimed (`launching`) event is withdrawn too: a run its launcher creates after
        # this is terminated by that launcher, or stops at its first op (execution canceled).
        withdrawn = TriggerEvent.objects.filter(
            execution=execution,
            status__in=(TriggerEvent.Status.PENDING, TriggerEvent.Status.LAUNCHING),
        ).update(status=TriggerEvent.Status.CANCELED)
        if withdrawn or not TriggerEvent.objects.filter(execution=execution).exists():
            now = timezone.now()
            execution.status = WorkflowExecution.Status.CANCELED
            execution.finished_at = now
            execution.error = "canceled before its run started"
            execution.save(update_fields=["status", "finished_at", "error"])
            return execution
    run_id = (
        execution.dagster_run_id
        or (
            TriggerEvent.objects.filter(execution=execution).values_list(
                "dagster_run_id", flat=True
            )
        ).first()
    )
    try:
        answer = dagster.graphql(TERMINATE, {"runId": run_id})["terminateRun"]
    except dagster.DagsterUnavailable as exc:
        raise DagsterUnavailableError(
            "Dagster is not reachable to stop the run; try again shortly."
        ) from exc
    if answer["__typename"] != "TerminateRunSuccess":
        raise ConflictError(
            f"Dagster could not stop the run: {answer.get('message', answer['__typename'])}"
        )
    return execution


REEXECUTE = """
mutation Reexecute($params: ReexecutionParams!) {
  launchRunReexecution(reexecutionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on Error { message }
  }
}
"""
_DAGSTER_STRATEGY = {
    WorkflowExecution.RerunStrategy.ALL: "ALL_STEPS",
    WorkflowExecution.RerunStrategy.FROM_FAILURE: "FROM_FAILURE",
}


def _rerun_refusal(parent: WorkflowExecution, strategy: str) -> ConflictError | None:
    if parent.status not in WorkflowExecution.FINISHED:
        return ConflictError(
            f"The execution is still {parent.status}: re-run it once it has finished.",
            code="not_finished",
        )
    if not parent.dagster_run_id:
        return ConflictError(
            "The execution never ran in Dagster (it was canceled before its run started): "
            "run the workflow again instead.",
            code="never_ran",
        )
    if strategy == WorkflowExecution.RerunStrategy.FROM_FAILURE and (
        parent.status == WorkflowExecution.Status.SUCCESS
    ):
        return ConflictError(
            "The execution succeeded: there is no failure to re-run from.",
            code="nothing_failed",
            fields={"strategy": ["use 'all' to run every step again"]},
        )
    workflow = parent.workflow
    if workflow.status != Workflow.Status.ACTIVE:
        return ConflictError(
            f"the workflow is {workflow.status}",
            code="not_active",
            fields={"status": [workflow.status]},
        )
    latest = workflow.versions.order_by("-number").values_list("pk", "number").first()
    if latest is None or latest[0] != parent.version_id:
        # Dagster holds the latest version's job only: re-executing it would run other steps.
        return ConflictError(
            f"The execution ran version {parent.version.number}; version "
            f"{latest[1] if latest else '?'} has been published since: run the workflow again "
            "instead.",
            code="version_changed",
        )
    return None


@transaction.atomic
def execution_rerun(
    *, execution_id: int, strategy: Any, user: User | None = None
) -> WorkflowExecution:
    """Re-run a finished execution of the organization in context: a new execution, the same
    version and inputs, counted against `runs_per_month`, whose run is launched right away as a
    Dagster re-execution of the old one's run.

    The launch happens before the new execution commits, while this transaction holds its
    launch lock (services.execution_launch_lock): the run's first op, and the run-status sensor,
    wait for that lock, so they always find the committed row, however fast the run starts. A
    refused or failed launch rolls everything back (nothing counted, nothing to clean up); a
    launch whose answer is lost still makes its execution when the run starts, from its tags."""
    parent = (
        WorkflowExecution.objects.select_related("workflow", "version")
        .filter(pk=execution_id)
        .first()
    )
    if parent is None:
        raise NotFoundError("Execution not found.")
    if not isinstance(strategy, str) or strategy not in _DAGSTER_STRATEGY:
        choices = ", ".join(_DAGSTER_STRATEGY)
        raise ApplicationError(
            f"strategy: expected one of {choices}",
            code="validation_error",
            fields={"strategy": [f"expected one of: {choices}"]},
        )
    refusal = _rerun_refusal(parent, strategy)
    if refusal is not None:
        raise refusal
    _runs_quota_check(workflow=parent.workflow)
    execution = WorkflowExecution.objects.create(
        organization_id=parent.organization_id,
        workflow=parent.workflow,
        version=parent.version,
        inputs=parent.inputs,
        rerun_of=parent,
        rerun_strategy=strategy,
        created_by=user,
    )
    event = TriggerEvent.objects.create(
        organization_id=parent.organization_id,
        workflow=parent.workflow,
        version=parent.version,
        execution=execution,
        kind=TriggerEvent.Kind.RERUN,
        status=TriggerEvent.Status.LAUNCHED,  # never for the trigger sensor or the fast path
        payload={"rerun_of": parent.pk, "strategy": strategy},
    )
    execution_launch_lock(execution_id=execution.pk)
    run_id = _reexecute(
        parent_run_id=parent.dagster_run_id,
        strategy=_DAGSTER_STRATEGY[strategy],
        # Not the parent's tags (its execution, event and sensor run key): the job's, and ours.
        tags={TAG_EXECUTION: str(execution.pk), TAG_EVENT: str(event.pk)},
    )
    execution.dagster_run_id = run_id
    execution.save(update_fields=["dagster_run_id"])
    TriggerEvent.objects.filter(pk=event.pk).update(
        dagster_run_id=run_id, launched_at=timezone.now()
    )
    return execution


def _reexecute(*, parent_run_id: str, strategy: str, tags: dict[str, str]) -> str:
    params = {
        "parentRunId": parent_run_id,
        "strategy": strategy,
        "extraTags": [{"key": key, "value": value} for key, value in tags.items()],
        "useParentRunTags": False,
    }
    try:
        answer = dagster.graphql(REEXECUTE, {"params": params})["launchRunReexecution"]
    except dagster.DagsterUnavailable as exc:
        raise DagsterUnavailableError(
            "Dagster is not reachable to re-run the execution; try again shortly."
        ) from exc
    if answer["__typename"] != "LaunchRunSuccess":
        raise ConflictError(
            f"Dagster did not re-execute the run: {answer.get('message', answer['__typename'])}",
            code="dagster_refused",
        )
    return answer["run"]["runId"]
