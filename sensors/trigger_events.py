"""The trigger sensor: the safety net under the control plane's fast path
(control_plane/executions/launch.py). Every committed TriggerEvent gets exactly one Dagster run.

Each tick:
1. **Sweep.** Events still `launching` `stale_seconds` after their claim (the fast path lost
   its answer, the web process died, or an earlier request of this sensor never became a run)
   are looked up by their `flowpilot/event` run tag: a run found → the event is marked
   launched; none → the event is claimed again, on condition that its claim is unchanged, and
   requested.
2. **Pending events.** Pending events are read in id order from the cursor on, wrapping round
   to the start, so none waits behind a page of events the sensor cannot launch yet. An event
   is claimed (`pending → launching`, one conditional UPDATE) before its RunRequest is yielded;
   an event the fast path claimed first is not claimed here, so the two never both launch it.
   With the fast path on, events younger than its grace period are left to it; schedule events
   are left to their schedule until stale, then claimed and launched only if no run carries
   their tag (Dagster's run_key dedupe is per sensor or schedule, not shared).

RunRequests carry run_key = event id, so a request repeated after a lost tick is deduplicated by
Dagster itself. The cursor is the last event id examined.
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
PAGE = 200  # pending events examined per tick (trigger_events_pending's limit)


def runs_by_event(context: SensorEvaluationContext, event_ids: Sequence[int]) -> dict[int, str]:
    """{event id: run id} of the runs in Dagster's run storage tagged with these events."""
    if not event_ids:
        return {}
    records = context.instance.get_run_records(
        RunsFilter(tags={TAG_EVENT: [str(pk) for pk in event_ids]})
    )
    return {int(r.dagster_run.tags[TAG_EVENT]): r.dagster_run.run_id for r in records}


def make_trigger_event_sensor(
    control_plane: ControlPlaneResource,
    job_names: Sequence[str],
    *,
    stale_seconds: float | None = None,
    minimum_interval_seconds: int = 1,
    shard: int = 0,
    shards: int = 1,
) -> SensorDefinition:
    """`stale_seconds`: when a claimed event is swept and a schedule event is no longer left to
    its schedule; by default FLOWPILOT_LAUNCH_STALE_SECONDS. `shard` of `shards`: the code
    location's shard; its sensor reads only its own organizations' events."""
    known = set(job_names)

    def request(event: dict, priority: int) -> RunRequest:
        return RunRequest(
            run_key=str(event["event_id"]),
            job_name=event["job_name"],
            run_config={"inputs": event["inputs"]},
            tags={
                TAG_EVENT: str(event["event_id"]),
                TAG_EXECUTION: str(event["execution_id"]),
                TAG_PRIORITY: str(priority),
            },
        )

    def sweep(context: SensorEvaluationContext, stale: float) -> list[RunRequest]:
        # Only this code location's jobs: another location's events are its own sensor's.
        events = control_plane.trigger_events_stale(stale_seconds=stale, job_names=sorted(known))
        if not events:
            return []
        runs = runs_by_event(context, [e["event_id"] for e in events])
        if runs:
            control_plane.trigger_events_mark_launched(runs)
        again = set(
            control_plane.trigger_events_reclaim(
                {e["event_id"]: e["claimed_at"] for e in events if e["event_id"] not in runs}
            )
        )
        if not again:
            return []
        info = control_plane.trigger_events_launch_info(sorted(again), stale_seconds=stale)
        return [
            request(e, info.get(e["event_id"], {}).get("priority", 0))
            for e in events
            if e["event_id"] in again
        ]

    def page(cursor: int, stale: float) -> list[dict]:
        """Up to PAGE pending events: those past the cursor, then from the start again."""

        def pending(after_id: int) -> list[dict]:
            return control_plane.pending_trigger_events(
                after_id=after_id, stale_seconds=stale, shard=shard, shards=shards
            )

        events = pending(cursor)
        if cursor and len(events) < PAGE:
            seen = {e["event_id"] for e in events}
            wrapped = pending(0)
            events += [e for e in wrapped if e["event_id"] <= cursor and e["event_id"] not in seen]
        return events[:PAGE]

    def evaluate(context: SensorEvaluationContext):
        stale = (
            stale_seconds
            if stale_seconds is not None
            else control_plane.trigger_launch_stale_seconds()
        )
        cursor = int(context.cursor or 0)
        requests = sweep(context, stale)

        events = page(cursor, stale)
        info = (
            control_plane.trigger_events_launch_info(
                [e["event_id"] for e in events], stale_seconds=stale
            )
            if events
            else {}
        )
        launchable = []
        for event in events:
            launch = info.get(event["event_id"], {})
            if event["job_name"] not in known:
                context.log.info(f"event {event['event_id']}: job {event['job_name']} not loaded")
            elif not launch.get("schedule_fresh"):  # a fresh one is its schedule's to launch
                launchable.append(event)
        claimed = set(control_plane.trigger_events_claim([e["event_id"] for e in launchable]))
        # A stale schedule event may have its run from the schedule: then it is only recorded.
        scheduled = [
            e["event_id"]
            for e in launchable
            if e["event_id"] in claimed and info.get(e["event_id"], {}).get("schedule")
        ]
        runs = runs_by_event(context, scheduled)
        if runs:
            control_plane.trigger_events_mark_launched(runs)
        requests += [
            request(e, info.get(e["event_id"], {}).get("priority", 0))
            for e in launchable
            if e["event_id"] in claimed and e["event_id"] not in runs
        ]

        requests.sort(key=lambda r: int(r.run_key))
        next_cursor = str(events[-1]["event_id"]) if events else "0"
        if not requests:
            return SensorResult(
                skip_reason=SkipReason("no pending trigger events"), cursor=next_cursor
            )
        return SensorResult(run_requests=requests, cursor=next_cursor)

    sensor = SensorDefinition(
        name="trigger_event_sensor",
        evaluation_fn=evaluate,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Starts a run for every committed FlowPilot trigger event the fast path did not "
            "launch, and sweeps stale claims (run_key = event id)"
        ),
        job_name=job_names[0] if job_names else None,
    )
    if len(job_names) > 1:
        # Target the jobs by name: naming them keeps the repository lazy (no job is built to
        # evaluate the sensor), and the daemon checks each RunRequest against these names.
        sensor._targets = [AutomationTarget(name) for name in job_names]  # noqa: SLF001
    return sensor
