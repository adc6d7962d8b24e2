"""An execution's log (`ExecutionLog`): what its run and steps did, as lines a person reads.

Lines are written by the Dagster side through the execution services, in the transaction of
the record they go with (a step's end writes its status and every line the step logged in one
batch), always in the tenant context of the execution's organization. Messages arrive already
redacted: a step's lines are the same text its Dagster log events carry."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from control_plane.core.errors import NotFoundError
from control_plane.executions.models import ExecutionLog, WorkflowExecution
from control_plane.organizations.models import Organization

MAX_MESSAGE_CHARS = 10_000
LEVELS = tuple(ExecutionLog.Level.values)
# Logger method names (Python's and Dagster's) -> the level a line is stored with.
_LEVEL_OF = {
    "debug": ExecutionLog.Level.DEBUG,
    "info": ExecutionLog.Level.INFO,
    "warning": ExecutionLog.Level.WARNING,
    "warn": ExecutionLog.Level.WARNING,
    "error": ExecutionLog.Level.ERROR,
    "critical": ExecutionLog.Level.ERROR,
    "exception": ExecutionLog.Level.ERROR,
}


def level_of(name: str) -> str:
    """The stored level for a logger method or level name (unknown names count as info)."""
    return _LEVEL_OF.get(str(name).lower(), ExecutionLog.Level.INFO)


def _storable(message: Any) -> str:
    # PostgreSQL text cannot hold NUL; one chatty line must not become a huge row.
    text = str(message).replace("\x00", "\\x00")
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 1] + "…"
    return text


def log_line(
    message: str, *, step_id: str = "", level: str = ExecutionLog.Level.INFO, at=None
) -> dict[str, Any]:
    """One line as the services pass it around before writing."""
    return {"step_id": step_id, "level": level, "message": message, "created_at": at}


def execution_log_write(
    *, organization_id: int, execution_id: int, lines: Iterable[Mapping[str, Any]]
) -> int:
    """Append lines to an execution's log in one INSERT; returns how many. Each line is a
    mapping with `message` and optionally `step_id`, `level` (a level or logger method name)
    and `created_at` (when it was logged; now when missing)."""
    now = timezone.now()
    rows = [
        ExecutionLog(
            organization_id=organization_id,
            execution_id=execution_id,
            step_id=str(line.get("step_id") or "")[:63],
            level=level_of(line.get("level") or ExecutionLog.Level.INFO),
            message=_storable(line["message"]),
            created_at=line.get("created_at") or now,
        )
        for line in lines
    ]
    if rows:
        ExecutionLog.objects.bulk_create(rows)
    return len(rows)


def execution_logs(
    *,
    organization: Organization,
    execution_id: int,
    step_id: str | None = None,
    levels: Iterable[str] | None = None,
    after_id: int | None = None,
) -> QuerySet[ExecutionLog]:
    """The log of one of the organization's executions, oldest line first: optionally one
    step's lines, some levels only, or only the lines after `after_id` (incremental reads)."""
    if not WorkflowExecution.objects.filter(organization=organization, pk=execution_id).exists():
        raise NotFoundError("Execution not found.")
    qs = ExecutionLog.objects.filter(organization=organization, execution_id=execution_id)
    if step_id is not None:
        qs = qs.filter(step_id=step_id)
    if levels:
        qs = qs.filter(level__in=list(levels))
    if after_id is not None:
        qs = qs.filter(id__gt=after_id)
    return qs.order_by("id")
