"""The trigger sensor: committed TriggerEvent rows -> Dagster runs, one per event.

The cursor is the highest event id requested so far. Events are also swept when they are still
pending after `stale_seconds` (committed out of id order, or their run was never created); for
those, a run already tagged with the event id is looked up first. Dagster itself skips a
RunRequest whose run_key was used, so an event never starts a second run.
"""

from __future__ import annotations

from collections.abc import Sequence

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
)
from dagster._core.definitions.target import AutomationTarget

from orchestration.rendering import TAG_PRIORITY
from resources.control_plane import ControlPlaneResource

TAG_EVENT = "flowpilot/event"
TAG_EXECUTION = "flowpilot/execution"


def make_trigger_event_sensor(
    control_plane: ControlPlaneResource,
    job_names: Sequence[str],
    *,
    stale_seconds: float = 30.0,
    minimum_interval_seconds: int = 1,
) -> SensorDefinition:
    known = set(job_names)

    def evaluate(context: SensorEvaluationContext):
        cursor = int(context.cursor or 0)
        events = control_plane.pending_trigger_events(after_id=cursor, stale_seconds=stale_seconds)
        info = (
            control_plane.trigger_events_launch_info(
                [event["event_id"] for event in events], stale_seconds=stale_seconds
            )
            if events
            else {}
        )
        requests = []
        highest = cursor
        for event in events:
            event_id = str(event["event_id"])
            launch = info.get(event["event_id"], {})
            if event["job_name"] not in known:
                context.log.info(f"event {event_id}: job {event['job_name']} not loaded yet")
                continue
            if launch.get("schedule_fresh"):
                continue  # its schedule requests the run itself; swept here once stale
            # Dagster's run_key dedupe is per sensor/schedule: an older event, or one a schedule
            # may have launched, is looked up by its event tag first.
            if (event["event_id"] <= cursor or launch.get("schedule")) and (
                context.instance.get_run_records(RunsFilter(tags={TAG_EVENT: event_id}), limit=1)
            ):
                continue  # requested before; its run exists and will mark the event launched
            highest = max(highest, event["event_id"])
            requests.append(
                RunRequest(
                    run_key=event_id,
                    job_name=event["job_name"],
                    run_config={"inputs": event["inputs"]},
                    tags={
                        TAG_EVENT: event_id,
                        TAG_EXECUTION: str(event["execution_id"]),
                        TAG_PRIORITY: str(launch.get("priority", 0)),
                    },
                )
            )
        if not requests:
            return SkipReason("no pending trigger events")
        return SensorResult(run_requests=requests, cursor=str(highest))

    sensor = SensorDefinition(
        name="trigger_event_sensor",
        evaluation_fn=evaluate,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Starts a run for every committed FlowPilot trigger event (run_key = event id)",
        job_name=job_names[0] if job_names else None,
    )
    if len(job_names) > 1:
        # Target the jobs by name: naming them keeps the repository lazy (no job is built to
        # evaluate the sensor), and the daemon checks each RunRequest against these names.
        sensor._targets = [AutomationTarget(name) for name in job_names]  # noqa: SLF001
    return sensor
