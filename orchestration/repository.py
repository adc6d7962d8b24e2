"""The FlowPilot repository, built lazily: the published-job index (one cheap query) is read
when the code location loads; a job is rendered only when asked for by name, so a run worker
renders just the job it runs (orchestration/repository_data.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from dagster import JobDefinition, RepositoryDefinition

from orchestration.maintenance import make_identity_cleanup
from orchestration.rendering import STAMP_METADATA, build_job
from orchestration.repository_data import WorkflowRepositoryData
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
    built_jobs: MutableMapping[str, JobDefinition] | None = None,
    deferred: Callable[[str], bool] | None = None,
) -> RepositoryDefinition:
    """The repository of code-location shard `shard` of `shards` (flowpilot/shards.py): the
    jobs, schedules and trigger sensor of the organizations in that shard only; the platform's
    maintenance jobs in shard 0. `built_jobs` ({render stamp: job}) carries jobs over from a
    previous build in this process: a job with the same stamp is the same job, so it is reused
    as it is (with its cached snapshot), and only changed ones are rendered; jobs no longer
    published are dropped from it. `deferred(stamp)`: whether loading the whole location may
    leave that job unbuilt (its snapshot is kept, orchestration/job_snapshots.py)."""
    resources = dict(resource_defs or default_resources(control_plane))
    published = control_plane.published_jobs(shard=shard, shards=shards)
    carried: MutableMapping[str, JobDefinition] = built_jobs if built_jobs is not None else {}
    for stale in set(carried) - {job.stamp for job in published.values()}:
        del carried[stale]

    rendered: set[int] = set()
    prefetched: dict[int, WorkflowSpec] = {}

    def spec_for(version_id: int) -> WorkflowSpec:
        # A run worker builds one job and reads one spec. A process that renders a second job is
        # loading the whole location (a code server): it reads all the others it will need in
        # one query.
        if len(rendered) == 1 and not prefetched:
            prefetched.update(control_plane.workflow_specs(_unbuilt_versions()))
        spec = prefetched.pop(version_id, None)
        return spec or control_plane.workflow_spec(version_id)

    def _unbuilt_versions() -> list[int]:
        skip = deferred or (lambda _stamp: False)
        return [
            job.version_id
            for job_name, job in published.items()
            if not data.is_built(job_name)
            and job.version_id not in rendered
            and job.stamp not in carried
            and not skip(job.stamp)
        ]

    def build(job_name: str) -> JobDefinition:
        stamp = published[job_name].stamp
        if stamp in carried:
            return carried[stamp]
        version_id = published[job_name].version_id
        job = build_job(spec_for(version_id), resources)
        rendered.add(version_id)
        carried[job.metadata[STAMP_METADATA].value] = job
        return job

    maintenance_jobs, schedules = [], []
    if shard == 0:
        cleanup_job, cleanup_schedule = make_identity_cleanup(control_plane)
        maintenance_jobs, schedules = [cleanup_job], [cleanup_schedule]
    schedules += make_workflow_schedules(
        control_plane,
        [row for row in control_plane.schedule_index() if row["job_name"] in published],
    )
    sensors = [
        make_trigger_event_sensor(control_plane, sorted(published), shard=shard, shards=shards),
        *make_execution_status_sensors(control_plane),
    ]
    data = WorkflowRepositoryData(
        jobs=maintenance_jobs,
        published=published,
        build=build,
        schedules=schedules,
        sensors=sensors,
        deferred=deferred,
    )
    return RepositoryDefinition(
        name, repository_data=data, description="FlowPilot workflows rendered as Dagster jobs"
    )
