"""Control-plane events (`triggers.EVENT_TYPES`) fanned out to the workflows subscribed to them.

The emitting side calls `event_emit` next to the thing that happened, inside its own
transaction: the started runs' TriggerEvents commit with it, or not at all."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from control_plane.core.errors import ApplicationError
from control_plane.core.tenancy import tenant_context
from control_plane.executions.models import TriggerEvent, WorkflowExecution
from control_plane.executions.services import workflow_run
from control_plane.workflows.models import Workflow, WorkflowTrigger
from control_plane.workflows.triggers import EVENT_TYPES

log = logging.getLogger(__name__)


def event_emit(
    *,
    organization_id: int,
    event_type: str,
    payload: dict[str, Any],
    source_workflow_id: int | None = None,
) -> list[WorkflowExecution]:
    """Start every active workflow of the organization with an enabled trigger on
    `event_type`; returns the executions started. Each start has its own savepoint, so one
    subscriber that cannot run (invalid inputs, over quota, not published) is logged and
    skipped without stopping the others. `source_workflow_id`, the workflow the event is about,
    is never started by it (a `workflow.failed` trigger on itself would loop)."""
    if event_type not in EVENT_TYPES:
        expected = ", ".join(EVENT_TYPES)
        raise ValueError(f"unknown event type {event_type!r} (expected one of: {expected})")
    started: list[WorkflowExecution] = []
    with tenant_context(organization_id):
        subscribed = (
            WorkflowTrigger.objects.filter(
                organization_id=organization_id,
                kind=WorkflowTrigger.Kind.EVENT,
                event_type=event_type,
                enabled=True,
                workflow__status=Workflow.Status.ACTIVE,
            )
            .select_related("workflow__organization")
            .order_by("id")
        )
        if source_workflow_id is not None:
            subscribed = subscribed.exclude(workflow_id=source_workflow_id)
        for trigger in subscribed:
            try:
                with transaction.atomic():
                    execution = workflow_run(
                        workflow=trigger.workflow,
                        kind=TriggerEvent.Kind.EVENT,
                        payload={"event": event_type, "data": payload},
                        trigger=trigger,
                    )
            except ApplicationError as exc:
                log.warning(
                    "event %s: trigger %s (workflow %s) not started: %s",
                    event_type,
                    trigger.pk,
                    trigger.workflow_id,
                    exc.message,
                    extra={"code": exc.code},
                )
                continue
            except Exception:  # a broken subscriber must not undo the emitter's work
                log.exception(
                    "event %s: trigger %s (workflow %s) failed to start",
                    event_type,
                    trigger.pk,
                    trigger.workflow_id,
                )
                continue
            started.append(execution)
    return started
