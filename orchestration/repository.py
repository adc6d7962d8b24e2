"""The FlowPilot repository, built lazily: the published-job index (one cheap query) is read
when the code location loads; a job is rendered only when asked for by name, so a run worker
renders just the job it runs."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from dagster import JobDefinition, RepositoryDefinition, repository

from orchestration.maintenance import make_identity_cleanup
from orchestration.rendering import build_job
from orchestration.schedules import make_workflow_schedules
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
) -> RepositoryDefinition:
    resources = dict(resource_defs or default_resources(control_plane))
    index = control_plane.published_job_index()

    @cache
    def job_for_version(version_id: int) -> JobDefinition:
        return build_job(control_plane.workflow_spec(version_id), resources)

    def lazy(version_id: int):
        return lambda: job_for_version(version_id)

    cleanup_job, cleanup_schedule = make_identity_cleanup(control_plane)
    schedules = [cleanup_schedule] + make_workflow_schedules(
        control_plane, [row for row in control_plane.schedule_index() if row["job_name"] in index]
    )
    sensors = [
        make_trigger_event_sensor(control_plane, sorted(index)),
        *make_execution_status_sensors(control_plane),
    ]

    @repository(name=name, description="FlowPilot workflows rendered as Dagster jobs")
    def flowpilot():
        return {
            "jobs": {
                cleanup_job.name: cleanup_job,
                **{job_name: lazy(version_id) for job_name, version_id in index.items()},
            },
            "sensors": {sensor.name: (lambda s=sensor: s) for sensor in sensors},
            "schedules": {schedule.name: schedule for schedule in schedules},
        }

    flowpilot.job_for_version = job_for_version  # for tests and benchmarks: build cache stats
    return flowpilot
