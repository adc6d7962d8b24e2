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
limits: leave it unset."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dagster import Field, Float, Int, StringSource
from dagster._core.run_coordinator.queued_run_coordinator import (
    QueuedRunCoordinator,
    RunQueueConfig,
)
from dagster._serdes import ConfigurableClassData

from orchestration.rendering import TAG_ORG

log = logging.getLogger(__name__)

DEFAULT_SETTINGS_MODULE = "control_plane.settings.dev"
DEFAULT_CACHE_SECONDS = 5.0
DEFAULT_LIMIT = 2  # the free plan's concurrent runs: the limit before quotas are known


def _control_plane_limits(settings_module: str) -> Callable[[], Mapping[str, int]]:
    def read() -> Mapping[str, int]:
        from resources.control_plane import ControlPlaneResource

        return ControlPlaneResource(settings_module=settings_module).concurrent_run_limits()

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
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._clock = clock
        self._lock = threading.Lock()
        self._limits: Mapping[str, int] | None = None
        self._read_at = float("-inf")
        self._configure(settings_module, quota_cache_seconds, default_limit, limits_source)

    def _configure(
        self,
        settings_module: str | None,
        quota_cache_seconds: float | None,
        default_limit: int | None,
        limits_source: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
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
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> FlowPilotRunCoordinator:
        own = ("settings_module", "quota_cache_seconds", "default_limit")
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
