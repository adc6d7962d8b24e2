"""Acting on an execution from the control plane: cancel it. An execution whose run has not
started yet is canceled here and now (its trigger event is withdrawn, so the trigger sensor
never launches it); a started one is terminated through Dagster's GraphQL API, and the
run-status sensor records the cancellation when Dagster confirms it."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from control_plane.core import dagster
from control_plane.core.errors import ApplicationError, ConflictError, NotFoundError
from control_plane.executions.models import TriggerEvent, WorkflowExecution

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
        withdrawn = TriggerEvent.objects.filter(
            execution=execution, status=TriggerEvent.Status.PENDING
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
