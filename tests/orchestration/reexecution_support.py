"""Running FlowPilot jobs the way re-execution needs, in process: jobs Dagster can rebuild by
reference (`execute_job` with `ReexecutionOptions` loads the job again from this module), and
runs closed through the real run-status sensors."""

from __future__ import annotations

from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    JobDefinition,
    build_reconstructable_job,
    build_run_status_sensor_context,
    execute_job,
)

from orchestration.rendering import build_job
from orchestration.repository import default_resources
from resources.control_plane import ControlPlaneResource
from sensors.execution_status import make_execution_status_sensors

SETTINGS = "control_plane.settings.test"


def flowpilot_job(version_id: int, organization_id: int) -> JobDefinition:
    """The job of a published version, with the test settings' resources. The version is read
    in its organization's context, so this works under the application role too (the code
    location reads it as the system)."""
    from control_plane.core.tenancy import tenant_context
    from control_plane.workflows.selectors import workflow_spec

    control_plane = ControlPlaneResource(settings_module=SETTINGS)
    with tenant_context(organization_id):
        spec = workflow_spec(version_id=version_id)
    return build_job(spec, default_resources(control_plane))


def run(workflow, instance: DagsterInstance, **kwargs):
    """execute_job of the workflow's latest version; failures are results, not exceptions."""
    from control_plane.core.tenancy import tenant_context
    from control_plane.workflows.selectors import workflow_latest_version

    with tenant_context(workflow.organization_id):
        version_id = workflow_latest_version(workflow=workflow).pk
    job = build_reconstructable_job(
        __name__, "flowpilot_job", reconstructable_args=(version_id, workflow.organization_id)
    )
    return execute_job(job, instance=instance, raise_on_error=False, **kwargs)


def finish_through_sensor(result, instance: DagsterInstance) -> None:
    """What the daemon does once the run has ended: the matching run-status sensor runs."""
    sensors = {
        sensor.name: sensor
        for sensor in make_execution_status_sensors(ControlPlaneResource(settings_module=SETTINGS))
    }
    dagster_run = instance.get_run_by_id(result.run_id)
    if dagster_run.status == DagsterRunStatus.SUCCESS:
        context = build_run_status_sensor_context(
            sensor_name="execution_success_sensor",
            dagster_event=result.get_run_success_event(),
            dagster_instance=instance,
            dagster_run=dagster_run,
        )
        sensors["execution_success_sensor"](context)
    else:
        context = build_run_status_sensor_context(
            sensor_name="execution_failure_sensor",
            dagster_event=result.get_run_failure_event(),
            dagster_instance=instance,
            dagster_run=dagster_run,
        ).for_run_failure()
        sensors["execution_failure_sensor"](context)
