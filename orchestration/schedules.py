"""Schedule triggers rendered as Dagster ScheduleDefinitions, one per enabled schedule trigger of
an active workflow. A tick does not request a bare run: it has the control plane write the
tick's TriggerEvent first (quota checked, idempotent per trigger and scheduled time), then
requests the run with run_key = the event id, as the trigger sensor does. So every run has its
event and execution, and the sensor's sweep still launches a tick whose run was never created."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
)

from orchestration.rendering import TAG_ORG, TAG_PRIORITY
from resources.control_plane import ControlPlaneResource
from sensors.trigger_events import TAG_EVENT, TAG_EXECUTION

TAG_TRIGGER = "flowpilot/trigger"


def schedule_name(job_name: str, trigger_id: int) -> str:
    return f"{job_name}__schedule_{trigger_id}"


def _has_run(context: ScheduleEvaluationContext, event_id: str) -> bool:
    """A run tagged with the event exists. Unknowable without an instance ref (a test context
    on an ephemeral instance): then Dagster's own run_key check for this schedule remains."""
    if context.instance_ref is None:
        return False
    return bool(context.instance.get_run_records(RunsFilter(tags={TAG_EVENT: event_id}), limit=1))


def _evaluation_fn(control_plane: ControlPlaneResource, trigger_id: int):
    def evaluate(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        scheduled = context.scheduled_execution_time or datetime.now(UTC)
        fired = control_plane.schedule_fire(trigger_id, scheduled_for=scheduled.isoformat())
        if "skip" in fired:
            return SkipReason(fired["skip"])
        event_id = str(fired["event_id"])
        if not fired["created"] and (fired["status"] != "pending" or _has_run(context, event_id)):
            # A retried tick whose event already has its run (from this schedule or the
            # sensor's sweep): requesting it again would start a second run.
            return SkipReason(f"event {event_id} of this tick already has its run")
        return RunRequest(
            run_key=event_id,
            run_config={"inputs": fired["inputs"]},
            tags={
                TAG_EVENT: event_id,
                TAG_EXECUTION: str(fired["execution_id"]),
                TAG_ORG: fired["org"],
                TAG_PRIORITY: str(fired["priority"]),
                TAG_TRIGGER: str(trigger_id),
            },
        )

    return evaluate


def make_workflow_schedules(
    control_plane: ControlPlaneResource, index: Sequence[dict]
) -> list[ScheduleDefinition]:
    """`index`: the rows of `schedule_index()` (trigger id, job name, cron, time zone, stamp).
    Schedules target their job by name, so the repository stays lazy."""
    return [
        ScheduleDefinition(
            name=schedule_name(row["job_name"], row["trigger_id"]),
            cron_schedule=row["cron"],
            job_name=row["job_name"],
            execution_timezone=row["timezone"],
            execution_fn=_evaluation_fn(control_plane, row["trigger_id"]),
            default_status=DefaultScheduleStatus.RUNNING,
            description=f"FlowPilot schedule trigger {row['trigger_id']}",
            metadata={"flowpilot/trigger_updated_at": row["updated_at"]},
        )
        for row in index
    ]
