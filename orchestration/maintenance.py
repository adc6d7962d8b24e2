"""Housekeeping the platform runs on itself, as ordinary Dagster jobs on schedules, so data
engineers see each run, its log and its counts in the Dagster UI (no cron script on a host)."""

from dagster import (
    DefaultScheduleStatus,
    JobDefinition,
    MetadataValue,
    Output,
    ScheduleDefinition,
    in_process_executor,
    job,
    op,
)

from resources.control_plane import ControlPlaneResource

IDENTITY_CLEANUP_CRON = "17 * * * *"  # hourly, off the top of the hour


@op(
    description="Delete expired sessions (ours and Django's), used or expired tokens, OAuth "
    "states, abandoned MFA enrolments and login attempts older than the retention."
)
def delete_expired_identity_rows(context, control_plane: ControlPlaneResource):
    deleted = control_plane.identity_cleanup()
    context.log.info(f"identity clean-up deleted {deleted}")
    metadata = {kind: MetadataValue.int(count) for kind, count in deleted.items()}
    return Output(deleted, metadata=metadata)


def make_identity_cleanup(
    control_plane: ControlPlaneResource,
) -> tuple[JobDefinition, ScheduleDefinition]:
    @job(
        name="identity_cleanup",
        description="Identity housekeeping (control_plane.users.services.identity_cleanup).",
        resource_defs={"control_plane": control_plane},
        executor_def=in_process_executor,
        tags={"flowpilot/system": "identity_cleanup"},
    )
    def identity_cleanup_job():
        delete_expired_identity_rows()

    schedule = ScheduleDefinition(
        name="identity_cleanup_hourly",
        job=identity_cleanup_job,
        cron_schedule=IDENTITY_CLEANUP_CRON,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING,
        description="Hourly identity clean-up.",
    )
    return identity_cleanup_job, schedule
