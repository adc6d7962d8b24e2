"""From a committed TriggerEvent to its one Dagster run: the fast path, the claim and the sweep.

- **Fast path.** When the transaction that wrote a manual, API, webhook or event trigger commits,
  a small pool of threads in this process launches the run through Dagster's GraphQL `launchRun`.
  The caller (a webhook's 202) does not wait for it. Schedule events are launched by their
  Dagster schedule, re-runs by their own service.
- **Claim.** Whoever launches an event first moves it `pending → launching` with one conditional
  UPDATE; only the caller whose UPDATE matched launches. The trigger sensor
  (sensors/trigger_events.py) claims the same way before it yields a RunRequest, so the fast
  path and the sensor never both launch one event.
- **Sweep.** An event still `launching` FLOWPILOT_LAUNCH_STALE_SECONDS after its claim (the web
  process died, Dagster was down, the answer was lost) is looked up by the sensor by its
  `flowpilot/event` run tag: a run found → the event is marked launched; none → it is claimed
  again, on condition that its claim is still the one the sensor read, and requested with
  run_key = event id.

The stale threshold is larger than any launch the fast path can still have in flight (settings
check it against DAGSTER_TIMEOUT_SECONDS, and a launch whose claim got old before it was sent is
handed back instead), so a swept event's run is never being created behind the sweep's back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import httpx
from django.conf import settings
from django.db import close_old_connections, connections, transaction
from django.db.models import CharField, Q, QuerySet, Value
from django.db.models.functions import Concat, Now, Replace
from django.utils import timezone

from control_plane.core import dagster
from control_plane.core.tenancy import system_database
from control_plane.executions.models import TriggerEvent
from control_plane.workflows.models import RUN_PRIORITY
from orchestration.steps.definition import job_name_for

log = logging.getLogger(__name__)

TAG_EVENT = "flowpilot/event"
TAG_EXECUTION = "flowpilot/execution"
TAG_PRIORITY = "dagster/priority"  # Dagster's own: the run queue dequeues higher values first
REPOSITORY_NAME = "flowpilot"

# What the fast path launches: every kind `workflow_run` writes except schedules.
FAST_KINDS = frozenset(
    {
        TriggerEvent.Kind.MANUAL,
        TriggerEvent.Kind.API,
        TriggerEvent.Kind.WEBHOOK,
        TriggerEvent.Kind.EVENT,
    }
)

LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on Error { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""

# Answers after which Dagster certainly created no run: the event goes back to `pending`.
# Anything else that is not a success (PythonError may come after the run was created, a lost
# or unreadable answer) leaves it `launching` for the sweep, which looks for the run first.
_NOT_CREATED = frozenset(
    {
        "PipelineNotFoundError",
        "RunConfigValidationInvalid",
        "InvalidStepError",
        "InvalidOutputError",
        "InvalidSubsetError",
        "UnauthorizedError",
        "ConflictingExecutionParamsError",
        "PresetNotFoundError",
        "NoModeProvidedError",
    }
)

# Outcomes of `trigger_event_launch`.
LAUNCHED = "launched"
TAKEN = "taken"  # claimed by someone else first, or no longer pending (canceled, launched)
RELEASED = "released"  # nothing was created: pending again, for the sensor
UNKNOWN = "unknown"  # the run may exist: left `launching` for the sweep
WITHDRAWN = "withdrawn"  # canceled while it launched: the new run was terminated


def _table() -> str:
    return TriggerEvent._meta.db_table


def _system_events() -> QuerySet[TriggerEvent]:
    return TriggerEvent.objects.unscoped().using(system_database())  # across organizations


# -- the claim (one conditional UPDATE each) -----------------------------------------------------


def trigger_events_claim(*, event_ids: Iterable[int]) -> dict[int, datetime]:
    """Claim pending events: `pending → launching`, claimed_at = now, in one UPDATE that
    matches only rows still pending. Returns {event id: claimed_at} of the events this call
    claimed; an event someone else claimed first, canceled or launched is not in it."""
    ids = sorted({int(pk) for pk in event_ids})
    if not ids:
        return {}
    with connections[system_database()].cursor() as cursor:
        cursor.execute(
            f"UPDATE {_table()} SET status = %s, claimed_at = statement_timestamp() "  # noqa: S608
            "WHERE id = ANY(%s) AND status = %s RETURNING id, claimed_at",
            [TriggerEvent.Status.LAUNCHING, ids, TriggerEvent.Status.PENDING],
        )
        return dict(cursor.fetchall())


def trigger_events_reclaim(*, claims: Mapping[int, datetime]) -> dict[int, datetime]:
    """Claim stale `launching` events again, each only if its claim is still the one read
    (`claims`: {event id: claimed_at as read}); two sweeps never both win one event."""
    if not claims:
        return {}
    ids = list(claims)
    with connections[system_database()].cursor() as cursor:
        cursor.execute(
            f"UPDATE {_table()} AS e SET claimed_at = statement_timestamp() "  # noqa: S608
            "FROM unnest(%s::bigint[], %s::timestamptz[]) AS c(id, claimed_at) "
            "WHERE e.id = c.id AND e.status = %s AND e.claimed_at = c.claimed_at "
            "RETURNING e.id, e.claimed_at",
            [ids, [claims[pk] for pk in ids], TriggerEvent.Status.LAUNCHING],
        )
        return dict(cursor.fetchall())


def trigger_events_release(*, event_id: int, claimed_at: datetime) -> bool:
    """Hand a claimed event back (`launching → pending`) when it certainly has no run, if the
    claim is still ours. Its claimed_at stays: the sensor takes a pending event the fast path
    already tried at once, without waiting out the grace period."""
    return bool(
        _system_events()
        .filter(pk=event_id, status=TriggerEvent.Status.LAUNCHING, claimed_at=claimed_at)
        .update(status=TriggerEvent.Status.PENDING)
    )


def trigger_events_mark_launched(*, runs: Mapping[int, str]) -> list[int]:
    """Record the Dagster run of claimed events ({event id: run id}): `launching → launched`.
    A canceled event stays canceled. Returns the ids marked."""
    if not runs:
        return []
    ids = list(runs)
    with connections[system_database()].cursor() as cursor:
        cursor.execute(
            f"UPDATE {_table()} AS e SET status = %s, dagster_run_id = r.run_id, "  # noqa: S608
            "launched_at = statement_timestamp() "
            "FROM unnest(%s::bigint[], %s::text[]) AS r(id, run_id) "
            "WHERE e.id = r.id AND e.status = %s RETURNING e.id",
            [
                TriggerEvent.Status.LAUNCHED,
                ids,
                [runs[pk] for pk in ids],
                TriggerEvent.Status.LAUNCHING,
            ],
        )
        return [row[0] for row in cursor.fetchall()]


# -- what the sensor reads -----------------------------------------------------------------------


def launch_rows(events: QuerySet[TriggerEvent]) -> list[dict[str, Any]]:
    """What launching each event needs, for the trigger sensor (one query)."""
    rows = events.select_related("organization", "workflow", "version", "execution")
    return [
        {
            "event_id": event.pk,
            "execution_id": event.execution_id,
            "job_name": job_name_for(event.organization.slug, event.workflow.slug),
            "inputs": event.execution.inputs,
            "org": event.organization.slug,
            "version": event.version.number,
            "claimed_at": event.claimed_at,
        }
        for event in rows
    ]


def trigger_events_stale(
    *, stale_seconds: float, job_names: Sequence[str] | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    """Events still `launching` `stale_seconds` after their claim (database time), oldest claim
    first: the sweep's work. `job_names`: only events of these jobs (a code location's sensor
    sweeps its own; another location's stale events must not fill its page)."""
    events = _system_events().filter(
        status=TriggerEvent.Status.LAUNCHING,
        claimed_at__lt=Now() - timedelta(seconds=stale_seconds),
    )
    if job_names is not None:
        # job_name_for in SQL: `<org>__<workflow>` with hyphens as underscores.
        job = Replace(
            Concat("organization__slug", Value("__"), "workflow__slug", output_field=CharField()),
            Value("-"),
            Value("_"),
        )
        events = events.annotate(job=job).filter(job__in=list(job_names))
    return launch_rows(events.order_by("claimed_at", "id")[:limit])


def pending_filter(*, stale_seconds: float) -> Q:
    """Which pending events the sensor may claim now: not a schedule event younger than
    `stale_seconds` (its schedule launches it), and with the fast path on, not an event the
    fast path launches that is younger than its grace period, unless the fast path tried it
    and handed it back (claimed_at set). created_at is written with Python's clock, so it is
    compared with Python's clock."""
    now = timezone.now()
    fresh_schedule = Q(
        kind=TriggerEvent.Kind.SCHEDULE, created_at__gte=now - timedelta(seconds=stale_seconds)
    )
    keep = ~fresh_schedule
    if settings.FLOWPILOT_FAST_LAUNCH:
        grace = timedelta(seconds=settings.FLOWPILOT_FAST_LAUNCH_GRACE_SECONDS)
        keep &= ~Q(kind__in=FAST_KINDS, created_at__gte=now - grace, claimed_at__isnull=True)
    return keep


# -- the fast path -------------------------------------------------------------------------------


def run_tags(*, event_id: int, execution_id: int, priority: int) -> dict[str, str]:
    """The tags a FlowPilot-launched run carries besides its job's own: the sweep finds a run
    by its event tag, the run's first op its execution, the run queue orders by priority."""
    return {
        TAG_EVENT: str(event_id),
        TAG_EXECUTION: str(execution_id),
        TAG_PRIORITY: str(priority),
    }


def _launch_params(event_id: int) -> dict[str, Any]:
    row = (
        _system_events()
        .filter(pk=event_id)
        .values(
            "execution_id",
            "execution__inputs",
            "organization__slug",
            "workflow__slug",
            "workflow__priority",
        )
        .get()
    )
    org = row["organization__slug"]
    tags = run_tags(
        event_id=event_id,
        execution_id=row["execution_id"],
        priority=RUN_PRIORITY[row["workflow__priority"]],
    )
    return {
        "selector": {
            "repositoryLocationName": dagster.code_location_for(org),
            "repositoryName": REPOSITORY_NAME,
            "jobName": job_name_for(org, row["workflow__slug"]),
        },
        "runConfigData": {"inputs": row["execution__inputs"]},
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
    }


def _refused(exc: dagster.DagsterUnavailable) -> bool:
    """Whether the request never reached Dagster (the connection itself failed)."""
    return isinstance(exc.__cause__, httpx.ConnectError)


def _withdraw_run(event_id: int, run_id: str) -> str:
    """The event was canceled while its run was being created: stop that run. If Dagster
    cannot be asked now, the run's first op finds its execution canceled and stops there."""
    from control_plane.executions.control import TERMINATE

    try:
        answer = dagster.graphql(TERMINATE, {"runId": run_id})["terminateRun"]
        if answer["__typename"] != "TerminateRunSuccess":
            log.warning("event %s: run %s not terminated: %s", event_id, run_id, answer)
    except dagster.DagsterUnavailable as exc:
        log.warning("event %s: run %s not terminated: %s", event_id, run_id, exc)
    return WITHDRAWN


def trigger_event_launch(*, event_id: int) -> str:
    """Claim the event and launch its run through Dagster's GraphQL `launchRun`. Returns the
    outcome: LAUNCHED; TAKEN (not pending any more: the sensor claimed it, or it was
    canceled); RELEASED (Dagster certainly created nothing: pending again, for the sensor);
    UNKNOWN (the answer was lost or ambiguous: left `launching` for the sweep, which looks for
    the run by its tag); WITHDRAWN (canceled meanwhile: the new run was terminated)."""
    claimed_at = trigger_events_claim(event_ids=[event_id]).get(event_id)
    if claimed_at is None:
        return TAKEN
    claimed = time.monotonic()
    params = _launch_params(event_id)
    # A claim that got old before the request left (a stalled process) is handed back rather
    # than sent late: the sweep must never race a launch still in flight.
    budget = settings.FLOWPILOT_LAUNCH_STALE_SECONDS - 3 * settings.DAGSTER_TIMEOUT_SECONDS
    if time.monotonic() - claimed > budget:
        trigger_events_release(event_id=event_id, claimed_at=claimed_at)
        return RELEASED
    try:
        answer = dagster.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
    except dagster.DagsterUnavailable as exc:
        if _refused(exc):
            trigger_events_release(event_id=event_id, claimed_at=claimed_at)
            log.info("event %s: Dagster refused the connection; left to the sensor", event_id)
            return RELEASED
        log.warning("event %s: launch answer lost (%s); left to the sweep", event_id, exc)
        return UNKNOWN
    kind = answer.get("__typename")
    if kind == "LaunchRunSuccess":
        run_id = answer["run"]["runId"]
        if trigger_events_mark_launched(runs={event_id: run_id}):
            return LAUNCHED
        status = _system_events().filter(pk=event_id).values_list("status", flat=True).first()
        if status == TriggerEvent.Status.CANCELED:
            return _withdraw_run(event_id, run_id)
        return LAUNCHED  # its run started already and recorded itself
    message = answer.get("message") or answer.get("errors") or kind
    if kind in _NOT_CREATED:
        trigger_events_release(event_id=event_id, claimed_at=claimed_at)
        log.warning(
            "event %s: Dagster refused the launch (%s); left to the sensor", event_id, message
        )
        return RELEASED
    log.warning("event %s: launch answered %s (%s); left to the sweep", event_id, kind, message)
    return UNKNOWN


# -- the pool ------------------------------------------------------------------------------------

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_slots: threading.BoundedSemaphore | None = None
_inflight: set[Future] = set()


def _launcher() -> tuple[ThreadPoolExecutor, threading.BoundedSemaphore]:
    global _pool, _slots
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=settings.FLOWPILOT_FAST_LAUNCH_THREADS,
                thread_name_prefix="flowpilot-launch",
            )
            _slots = threading.BoundedSemaphore(settings.FLOWPILOT_FAST_LAUNCH_QUEUE)
        return _pool, _slots


def _launch_in_thread(event_id: int) -> str | None:
    close_old_connections()
    try:
        return trigger_event_launch(event_id=event_id)
    except Exception:  # the event stays where it got to; the sensor takes it from there
        log.exception("event %s: fast launch failed; left to the trigger sensor", event_id)
        return None
    finally:
        close_old_connections()  # this thread's connections, as a request's end would


def _done(future: Future, slots: threading.BoundedSemaphore) -> None:
    with _lock:
        _inflight.discard(future)
    slots.release()


def fast_launch_submit(event_id: int) -> Future | None:
    """Launch the event's run in the background. None when the queue is full: the trigger
    sensor launches it after the grace period."""
    pool, slots = _launcher()
    if not slots.acquire(blocking=False):
        log.warning("fast launch queue full; event %s is left to the trigger sensor", event_id)
        return None
    try:
        future = pool.submit(_launch_in_thread, event_id)
    except RuntimeError:  # the interpreter is shutting down
        slots.release()
        return None
    with _lock:
        _inflight.add(future)
    future.add_done_callback(partial(_done, slots=slots))
    return future


def fast_launch_on_commit(*, event: TriggerEvent) -> None:
    """Launch the event's run as soon as the transaction that wrote it commits (never if it
    rolls back). A no-op for schedule events and with FLOWPILOT_FAST_LAUNCH off."""
    if not settings.FLOWPILOT_FAST_LAUNCH or event.kind not in FAST_KINDS:
        return
    transaction.on_commit(partial(fast_launch_submit, event.pk), using=event._state.db)


def fast_launch_wait(timeout: float | None = None) -> bool:
    """Wait for the launches submitted so far (tests, benchmarks); True when all finished."""
    with _lock:
        pending: Sequence[Future] = list(_inflight)
    return not wait(pending, timeout=timeout).not_done
