"""Helpers for tests of the warm run launcher and the run coordinator on a real DagsterInstance:
the runs the trigger sensor would create, and waits on their workers and executions."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.remote_origin import (
    ManagedGrpcPythonEnvCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.test_utils import instance_for_test
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from control_plane.executions.models import WorkflowExecution
from orchestration.repository import make_repository
from orchestration.run_launcher import worker_info
from orchestration.storage import storage_config
from resources.control_plane import ControlPlaneResource
from tests.factories import run_workflow

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = "control_plane.settings.test"
CODE_MODULE = "orchestration.definitions"

SLEEPY = {
    "inputs": {"url": {"type": "string"}},
    "steps": [
        {"id": "greet", "type": "transform.template", "config": {"template": "hi"}},
        {
            "id": "wait",
            "type": "http.request",
            "after": ["greet"],
            "config": {"url": "{{ inputs.url }}", "method": "GET"},
        },
    ],
}


def overrides(storage_url: str, coordinator: dict | None = None, **launcher_config) -> dict:
    """A warm-launcher instance on `storage_url`; `coordinator` adds FlowPilot's run coordinator
    with that config (otherwise Dagster's default coordinator launches every run at once)."""
    coordinators = {}
    if coordinator is not None:
        coordinators["run_coordinator"] = {
            "module": "orchestration.run_coordinator",
            "class": "FlowPilotRunCoordinator",
            "config": {"settings_module": SETTINGS, **coordinator},
        }
    return {
        **coordinators,
        **storage_config(storage_url),
        "run_launcher": {
            "module": "orchestration.run_launcher",
            "class": "WarmRunLauncher",
            "config": {"settings_module": SETTINGS, "stop_grace_seconds": 5, **launcher_config},
        },
        "run_monitoring": {
            "enabled": True,
            "poll_interval_seconds": 5,
            "cancellation_thread_poll_interval_seconds": 1,
        },
    }


def warm_instance(
    storage_url: str, environment: dict, coordinator: dict | None = None, **launcher_config
):
    patch = pytest.MonkeyPatch()
    for name, value in environment.items():
        patch.setenv(name, value)
    context = instance_for_test(overrides=overrides(storage_url, coordinator, **launcher_config))
    return patch, context


def create_run(
    instance: DagsterInstance,
    workflow,
    inputs: dict | None = None,
    attribute: str = "defs",
    location_name: str = "flowpilot",
):
    """The Dagster run the trigger sensor would request for a new execution of `workflow`,
    with the origins of a code location (by default `flowpilot`: orchestration.definitions:defs)."""
    execution = run_workflow(workflow, inputs=inputs or {})
    job_name = f"{workflow.organization.slug}__{workflow.slug}"
    job = make_repository(ControlPlaneResource()).get_job(job_name)
    repository = RepositoryPythonOrigin(
        executable_path=sys.executable,
        code_pointer=ModuleCodePointer(CODE_MODULE, attribute, str(ROOT)),
    )
    location = ManagedGrpcPythonEnvCodeLocationOrigin(
        LoadableTargetOrigin(
            executable_path=sys.executable,
            module_name=CODE_MODULE,
            attribute=attribute,
            working_directory=str(ROOT),
        ),
        location_name=location_name,
    )
    run = instance.create_run_for_job(
        job_def=job,
        run_config={"inputs": execution.inputs},
        tags={
            **job.tags,
            "flowpilot/event": str(execution.trigger_event.pk),
            "flowpilot/execution": str(execution.pk),
        },
        remote_job_origin=RemoteJobOrigin(RemoteRepositoryOrigin(location, "flowpilot"), job_name),
        job_code_origin=JobPythonOrigin(job_name, repository),
    )
    return run, execution


def launch(instance, workflow, inputs=None, **origin):
    run, execution = create_run(instance, workflow, inputs, **origin)
    instance.launch_run(run.run_id, workspace=None)
    return run, execution


def closed(execution, timeout: float = 15) -> WorkflowExecution:
    """The execution once finished: the worker closes it right after the run's last event."""

    def finished():
        row = WorkflowExecution.objects.unscoped().get(pk=execution.pk)
        return row if row.status in WorkflowExecution.FINISHED else None

    return wait_for(finished, timeout, f"execution {execution.pk} closed")


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout}s")


def worker_of(instance, run_id) -> dict:
    return wait_for(
        lambda: worker_info(instance.get_run_by_id(run_id)), 60, f"worker tag of run {run_id}"
    )


def step_started(instance, run_id, step: str) -> None:
    def started():
        records = instance.get_records_for_run(
            run_id=run_id, of_type=DagsterEventType.STEP_START
        ).records
        return any(r.event_log_entry.step_key == step for r in records)

    wait_for(started, 60, f"step {step} of run {run_id}")


def messages(instance, run_id) -> list[str]:
    return [entry.message or "" for entry in instance.all_logs(run_id)]
