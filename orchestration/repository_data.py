"""The FlowPilot repository's contents, as Dagster's `RepositoryData` (its public extension point
for repositories that create their members lazily).

A workflow's job is built the first time it is asked for, once, under a lock (a code server answers
from several threads). `load_all_definitions` — which Dagster's code server calls when it loads
a location, to build everything before serving — builds every job except those whose snapshot is
already kept (`deferred`, orchestration/job_snapshots.py): their snapshots are answered from the
store, and the job itself is built only if a run or an execution plan needs it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence

from dagster import (
    DagsterInvariantViolationError,
    JobDefinition,
    RepositoryDefinition,
    ScheduleDefinition,
    SensorDefinition,
)
from dagster._core.definitions.repository_definition.repository_data import RepositoryData

from orchestration.steps.definition import PublishedJob


class WorkflowRepositoryData(RepositoryData):
    def __init__(
        self,
        *,
        jobs: Sequence[JobDefinition],
        published: Mapping[str, PublishedJob],
        build: Callable[[str], JobDefinition],
        schedules: Sequence[ScheduleDefinition],
        sensors: Sequence[SensorDefinition],
        deferred: Callable[[str], bool] | None = None,
    ) -> None:
        """`jobs`: built jobs (the platform's own); `published`: the workflow jobs by name,
        built by `build(name)` when first asked for; `deferred(stamp)`: whether
        `load_all_definitions` may leave a workflow job unbuilt."""
        self._jobs = {job.name: job for job in jobs}
        self.published: dict[str, PublishedJob] = dict(published)
        self._build = build
        self._built: dict[str, JobDefinition] = {}
        self._lock = threading.Lock()
        self._schedules = list(schedules)
        self._sensors = list(sensors)
        self._deferred = deferred or (lambda _stamp: False)

    def get_top_level_resources(self) -> Mapping:
        return {}  # resources are bound per job, each job only those its steps use

    def get_env_vars_by_top_level_resource(self) -> Mapping:
        return {}

    def get_job_names(self) -> Sequence[str]:
        return [*self._jobs, *self.published]

    def has_job(self, job_name: str) -> bool:
        return job_name in self._jobs or job_name in self.published

    def get_job(self, job_name: str) -> JobDefinition:
        if job_name in self._jobs:
            return self._jobs[job_name]
        if job_name not in self.published:
            raise DagsterInvariantViolationError(f"Could not find job {job_name} in repository")
        with self._lock:
            job = self._built.get(job_name)
            if job is None:
                job = self._built[job_name] = self._build(job_name)
        return job

    def is_built(self, job_name: str) -> bool:
        return job_name in self._jobs or job_name in self._built

    def built_workflow_jobs(self) -> list[str]:
        """The names of the workflow jobs built so far in this repository."""
        return list(self._built)

    def get_all_jobs(self) -> Sequence[JobDefinition]:
        return [self.get_job(name) for name in self.get_job_names()]

    def get_all_schedules(self) -> Sequence[ScheduleDefinition]:
        return self._schedules

    def get_all_sensors(self) -> Sequence[SensorDefinition]:
        return self._sensors

    def load_all_definitions(self) -> None:
        for name, job in self.published.items():
            if not self._deferred(job.stamp):
                self.get_job(name)

    def without_workflow_jobs(self) -> WorkflowRepositoryData:
        """The same repository without its workflow jobs (schedules and sensors name their jobs,
        so they stay valid): what the repository snapshot is computed from when the workflow
        jobs' own snapshots come from the store."""
        return WorkflowRepositoryData(
            jobs=list(self._jobs.values()),
            published={},
            build=self._build,
            schedules=self._schedules,
            sensors=self._sensors,
        )


def workflow_data(repository: RepositoryDefinition) -> WorkflowRepositoryData | None:
    """The repository's WorkflowRepositoryData, or None for any other repository."""
    data = getattr(repository, "_repository_data", None)
    return data if isinstance(data, WorkflowRepositoryData) else None
