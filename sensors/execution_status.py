"""Run-status sensors: a finished Dagster run finishes its FlowPilot execution."""

from __future__ import annotations

from collections.abc import Sequence

from dagster import (
    DagsterEvent,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunStatusSensorContext,
    SensorDefinition,
    run_failure_sensor,
    run_status_sensor,
)

from resources.control_plane import ControlPlaneResource


def run_failure_message(
    step_failures: Sequence[DagsterEvent], failure_event: DagsterEvent | None
) -> str:
    """The execution's error for a failed run: the first failed step's error, else the run's
    failure message. The run worker (orchestration/warm_worker.py) writes the same."""
    for event in step_failures:
        data = event.event_specific_data
        error = getattr(data, "error", None)
        if error is not None:
            return f"{event.step_key}: {error.message.strip()}"
    return ((failure_event.message if failure_event else None) or "run failed").strip()


def _failure_message(context: RunFailureSensorContext) -> str:
    return run_failure_message(context.get_step_failure_events(), context.failure_event)


def make_execution_status_sensors(control_plane: ControlPlaneResource) -> list[SensorDefinition]:
    @run_status_sensor(
        name="execution_success_sensor",
        run_status=DagsterRunStatus.SUCCESS,
        minimum_interval_seconds=1,
        default_status=DefaultSensorStatus.RUNNING,
    )
    def execution_success_sensor(context: RunStatusSensorContext):
        control_plane.execution_finished(
            run_id=context.dagster_run.run_id, run_status="SUCCESS", tags=context.dagster_run.tags
        )

    @run_failure_sensor(
        name="execution_failure_sensor",
        minimum_interval_seconds=1,
        default_status=DefaultSensorStatus.RUNNING,
    )
    def execution_failure_sensor(context: RunFailureSensorContext):
        control_plane.execution_finished(
            run_id=context.dagster_run.run_id,
            run_status="FAILURE",
            error=_failure_message(context),
            tags=context.dagster_run.tags,
        )

    @run_status_sensor(
        name="execution_canceled_sensor",
        run_status=DagsterRunStatus.CANCELED,
        minimum_interval_seconds=1,
        default_status=DefaultSensorStatus.RUNNING,
    )
    def execution_canceled_sensor(context: RunStatusSensorContext):
        control_plane.execution_finished(
            run_id=context.dagster_run.run_id,
            run_status="CANCELED",
            error="canceled",
            tags=context.dagster_run.tags,
        )

    return [execution_success_sensor, execution_failure_sensor, execution_canceled_sensor]
