"""Per-organization concurrency in Dagster's own run queue.

`tag_concurrency_limits` with `applyLimitPerUniqueValue` gives every organization the same limit;
quotas differ per organization. Dagster's QueuedRunCoordinatorDaemon reads the limits on every
dequeue iteration through `instance.get_concurrency_config()`, which calls the coordinator's
`get_run_queue_config()`; its `TagConcurrencyLimitsCounter` accepts per-value limits
(`{"key", "value": <str>, "limit"}`). So this coordinator returns one per-value limit on
`flowpilot/org` for each organization (its concurrent-runs quota, read from the control plane
and cached a few seconds), plus a per-unique-value limit for organizations not seen yet.

The counter applies *every* matching rule to a run: the per-unique-value rule caps each
organization too, so it is set to the largest per-organization limit (never tighter than an
organization's own); before the first successful read it is `default_limit` alone.
Instance-level `concurrency.runs.tag_concurrency_limits` in dagster.yaml would replace these
limits: leave it unset.

Direct launch (`launch_directly`, on by default). The daemon dequeues once per
`dequeue_interval_seconds` (its loop waits in 0.5 s slices), so a queued run waits 0.5 s on
average before its worker starts. When nothing is queued, the organization is under its quota,
the instance under `max_concurrent_runs`, and the run launcher has a warm worker for the run's
code location in this process, `submit_run` launches the run at once, as Dagster's
DefaultRunCoordinator does; otherwise it queues it. Submits take a PostgreSQL advisory lock on
the run storage, so two submits never both see the last free slot. The daemon is not under that
lock: it reads the runs in progress, then the queue, and could count a direct launch that landed
between the two reads as free. An enqueue therefore waits until the latest direct launch is
`settle_seconds` old, far longer than the daemon's two reads take. With storage other than
PostgreSQL every run is queued."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as db
from dagster import Bool, Field, Float, Int, StringSource
from dagster import _check as check
from dagster._core.run_coordinator.base import SubmitRunContext
from dagster._core.run_coordinator.queued_run_coordinator import (
    QueuedRunCoordinator,
    RunQueueConfig,
)
from dagster._core.storage.dagster_run import (
    ACTIVE_RUN_STATUSES,
    DagsterRun,
    DagsterRunStatus,
    RunsFilter,
)
from dagster._core.storage.runs.sql_run_storage import SqlRunStorage
from dagster._serdes import ConfigurableClassData

from orchestration.rendering import TAG_ORG

log = logging.getLogger(__name__)

DEFAULT_SETTINGS_MODULE = "control_plane.settings.dev"
DEFAULT_CACHE_SECONDS = 5.0
DEFAULT_LIMIT = 2  # the free plan's concurrent runs: the limit before quotas are known
DEFAULT_SETTLE_SECONDS = 0.25
TAG_LAUNCH = "flowpilot/launch"  # "direct" on runs launched without queuing
SUBMIT_LOCK = 0x466C6F7750  # pg_advisory_lock key of run submits ("FlowP")


_readers: list[ThreadPoolExecutor] = []
_readers_lock = threading.Lock()


def _reader() -> ThreadPoolExecutor:
    with _readers_lock:
        if not _readers:
            _readers.append(ThreadPoolExecutor(1, thread_name_prefix="flowpilot-quotas"))
        return _readers[0]


def _control_plane_limits(settings_module: str) -> Callable[[], Mapping[str, int]]:
    """Reads the quotas through Django; from an event loop's thread (the webserver submits runs
    from its event loop, where Django refuses database calls: SynchronousOnlyOperation) on a
    thread of its own."""

    def read() -> Mapping[str, int]:
        from resources.control_plane import ControlPlaneResource

        resource = ControlPlaneResource(settings_module=settings_module)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return resource.concurrent_run_limits()

        def read_once() -> Mapping[str, int]:
            from django.db import connections

            try:
                return resource.concurrent_run_limits()
            finally:
                connections.close_all()  # no idle connection between reads (seconds apart)

        return _reader().submit(read_once).result(timeout=30)

    return read


class FlowPilotRunCoordinator(QueuedRunCoordinator):
    """A QueuedRunCoordinator whose tag limits follow each organization's concurrent-runs
    quota. Queuing, dequeuing, priorities and cancelling are Dagster's own."""

    def __init__(
        self,
        *args: Any,
        settings_module: str | None = None,
        quota_cache_seconds: float | None = None,
        default_limit: int | None = None,
        limits_source: Callable[[], Mapping[str, int]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        launch_directly: bool | None = None,
        settle_seconds: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._clock = clock
        self._lock = threading.Lock()
        self._limits: Mapping[str, int] | None = None
        self._read_at = float("-inf")
        self._configure(
            settings_module,
            quota_cache_seconds,
            default_limit,
            launch_directly,
            settle_seconds,
            limits_source,
        )

    def _configure(
        self,
        settings_module: str | None,
        quota_cache_seconds: float | None,
        default_limit: int | None,
        launch_directly: bool | None,
        settle_seconds: float | None,
        limits_source: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self.launch_directly = True if launch_directly is None else launch_directly
        self.settle_seconds = DEFAULT_SETTLE_SECONDS if settle_seconds is None else settle_seconds
        self._limits_source = limits_source or _control_plane_limits(
            settings_module or DEFAULT_SETTINGS_MODULE
        )
        self._cache_seconds = (
            DEFAULT_CACHE_SECONDS if quota_cache_seconds is None else quota_cache_seconds
        )
        self._default_limit = DEFAULT_LIMIT if default_limit is None else default_limit

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {
            **super().config_type(),
            "settings_module": Field(StringSource, is_required=False),
            "quota_cache_seconds": Field(Float, is_required=False),
            "default_limit": Field(Int, is_required=False),
            "launch_directly": Field(Bool, is_required=False),
            "settle_seconds": Field(Float, is_required=False),
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> FlowPilotRunCoordinator:
        own = (
            "settings_module",
            "quota_cache_seconds",
            "default_limit",
            "launch_directly",
            "settle_seconds",
        )
        base = {key: value for key, value in config_value.items() if key not in own}
        coordinator = super().from_config_value(inst_data, base)
        coordinator._configure(*(config_value.get(key) for key in own))
        return coordinator

    def organization_limits(self) -> Mapping[str, int] | None:
        """{slug: limit}, re-read when older than the cache; the last known on a failed read."""
        with self._lock:
            if self._clock() - self._read_at >= self._cache_seconds:
                try:
                    self._limits = dict(self._limits_source())
                except Exception:  # a daemon must keep dequeuing: keep the last limits
                    log.exception("reading the organizations' concurrent-runs quotas failed")
                self._read_at = self._clock()
            return self._limits

    def tag_limits(self) -> Sequence[Mapping[str, Any]]:
        limits = self.organization_limits() or {}
        per_org = [{"key": TAG_ORG, "value": slug, "limit": n} for slug, n in limits.items()]
        fallback = max([self._default_limit, *limits.values()])
        unique = {"key": TAG_ORG, "value": {"applyLimitPerUniqueValue": True}, "limit": fallback}
        return [*super().get_run_queue_config().tag_concurrency_limits, *per_org, unique]

    def get_run_queue_config(self) -> RunQueueConfig:
        return super().get_run_queue_config()._replace(tag_concurrency_limits=self.tag_limits())

    # -- direct launch --------------------------------------------------------------------------

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        if not (
            self.launch_directly
            and run.status == DagsterRunStatus.NOT_STARTED
            and TAG_ORG in run.tags
        ):
            return super().submit_run(context)
        with self._submit_lock() as locked:
            if locked and self._may_launch_now(run):
                self._instance.add_run_tags(run.run_id, {TAG_LAUNCH: "direct"})
                self._instance.launch_run(run.run_id, context.workspace)
                return check.not_none(self._instance.get_run_by_id(run.run_id))
            if locked:
                self._settle()
            return super().submit_run(context)

    @contextmanager
    def _submit_lock(self) -> Iterator[bool]:
        """The run storage's advisory lock for the duration of one submit; False (no lock)
        when the storage is not PostgreSQL."""
        storage = self._instance.run_storage
        if not isinstance(storage, SqlRunStorage):
            yield False
            return
        with storage.connect() as connection:
            if connection.dialect.name != "postgresql":
                yield False
                return
            connection.execute(db.text("SELECT pg_advisory_lock(:key)"), {"key": SUBMIT_LOCK})
            try:
                yield True
            finally:
                connection.execute(db.text("SELECT pg_advisory_unlock(:key)"), {"key": SUBMIT_LOCK})

    def _may_launch_now(self, run: DagsterRun) -> bool:
        """Whether the daemon would launch this run at its next iteration with nothing else
        waiting: a warm worker here, an empty queue, and room under every limit."""
        ready = getattr(self._instance.run_launcher, "ready_for", None)
        if ready is None or not ready(run):
            return False
        limits = self.organization_limits()
        if limits is None or super().get_run_queue_config().tag_concurrency_limits:
            return False  # quotas unknown, or limits of the instance's own to apply
        if self._instance.get_runs_count(RunsFilter(statuses=[DagsterRunStatus.QUEUED])):
            return False  # runs are waiting: the daemon's priorities decide
        active = self._instance.get_runs(RunsFilter(statuses=ACTIVE_RUN_STATUSES))
        most = self.get_run_queue_config().max_concurrent_runs
        if most != -1 and len(active) >= most:
            return False
        org = run.tags[TAG_ORG]
        limit = limits.get(org, max([self._default_limit, *limits.values()]))
        return sum(r.tags.get(TAG_ORG) == org for r in active) < limit

    def _settle(self) -> None:
        """Hold an enqueue until the latest direct launch is `settle_seconds` old (see the
        module's doc)."""
        now = datetime.now(UTC)
        recent = RunsFilter(
            statuses=ACTIVE_RUN_STATUSES,
            tags={TAG_LAUNCH: "direct"},
            updated_after=now - timedelta(seconds=self.settle_seconds),
        )
        latest = self._instance.get_run_records(
            filters=recent, limit=1, order_by="update_timestamp", ascending=False
        )
        if latest:
            updated = latest[0].update_timestamp
            if updated.tzinfo is None:
                updated = updated.replace(tzinfo=UTC)  # stored as naive UTC
            age = (now - updated).total_seconds()
            time.sleep(min(self.settle_seconds, max(0.0, self.settle_seconds - age)))
