"""The FlowPilot repository, built lazily: the published-job index (one cheap query) is read
when the code location loads; a job is rendered only when asked for by name, so a run worker
renders just the job it runs."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from functools import cache
from typing import Any

from dagster import JobDefinition, RepositoryDefinition, repository

from orchestration.maintenance import make_identity_cleanup
from orchestration.rendering import build_job
from orchestration.schedules import make_workflow_schedules
from orchestration.steps.definition import WorkflowSpec
from resources.control_plane import ControlPlaneResource
from resources.email import EmailResource
from resources.http import HttpResource
from resources.slack import SlackResource
from sensors.execution_status import make_execution_status_sensors
from sensors.trigger_events import make_trigger_event_sensor


def default_resources(control_plane: ControlPlaneResource) -> dict[str, Any]:
    """One resource per outside system; secrets come from the environment when used."""
    return {
        "control_plane": control_plane,
        "http": HttpResource(),
        "email": EmailResource(settings_module=control_plane.settings_module),
        "slack": SlackResource(),
    }


def make_repository(
    control_plane: ControlPlaneResource,
    resource_defs: Mapping[str, Any] | None = None,
    name: str = "flowpilot",
    *,
    shard: int = 0,
    shards: int = 1,
    built_jobs: MutableMapping[int, JobDefinition] | None = None,
) -> RepositoryDefinition:
    """The repository of code-location shard `shard` of `shards` (flowpilot/shards.py): the
    jobs, schedules and trigger sensor of the organizations in that shard only; the platform's
    maintenance jobs in shard 0. `built_jobs` ({version id: job}) carries jobs over from a
    previous build in this process: a version is immutable, so its job is reused as it is
    (with its cached snapshot), and only new versions are rendered; versions no longer
    published are dropped from it."""
    resources = dict(resource_defs or default_resources(control_plane))
    index = control_plane.published_job_index(shard=shard, shards=shards)
    if built_jobs is not None:
        for stale in set(built_jobs) - set(index.values()):
            del built_jobs[stale]

    built: set[int] = set()
    prefetched: dict[int, WorkflowSpec] = {}

    def spec_for(version_id: int) -> WorkflowSpec:
        # A run worker builds one job and reads one spec. A process that builds a second job is
        # loading the whole location (a code server): it reads all the others in one query.
        if len(built) == 1 and not prefetched:
            missing = [v for v in index.values() if v not in built and v not in (built_jobs or {})]
            prefetched.update(control_plane.workflow_specs(missing))
        spec = prefetched.pop(version_id, None)
        return spec or control_plane.workflow_spec(version_id)

    @cache
    def job_for_version(version_id: int) -> JobDefinition:
        if built_jobs is not None and version_id in built_jobs:
            return built_jobs[version_id]
        job = build_job(spec_for(version_id), resources)
        built.add(version_id)
        if built_jobs is not None:
            built_jobs[version_id] = job
        return job

    def lazy(version_id: int):
        return lambda: job_for_version(version_id)

    maintenance_jobs, schedules = [], []
    if shard == 0:
        cleanup_job, cleanup_schedule = make_identity_cleanup(control_plane)
        maintenance_jobs, schedules = [cleanup_job], [cleanup_schedule]
    schedules += make_workflow_schedules(
        control_plane, [row for row in control_plane.schedule_index() if row["job_name"] in index]
    )
    sensors = [
        make_trigger_event_sensor(control_plane, sorted(index), shard=shard, shards=shards),
        *make_execution_status_sensors(control_plane),
    ]

    @repository(name=name, description="FlowPilot workflows rendered as Dagster jobs")
    def flowpilot():
        return {
            "jobs": {
                **{job.name: job for job in maintenance_jobs},
                **{job_name: lazy(version_id) for job_name, version_id in index.items()},
            },
            "sensors": {sensor.name: (lambda s=sensor: s) for sensor in sensors},
            "schedules": {schedule.name: schedule for schedule in schedules},
        }

    flowpilot.job_for_version = job_for_version  # for tests and benchmarks: build cache stats
    return flowpilot
