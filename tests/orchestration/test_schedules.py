"""Schedule triggers as Dagster schedules (every tick through a TriggerEvent), workflow priority
as `dagster/priority`, and per-organization run limits in Dagster's run queue."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from dagster import DagsterInstance, RunRequest, build_schedule_context, build_sensor_context
from dagster._core.test_utils import instance_for_test
from dagster._utils.schedules import cron_string_iterator
from dagster._utils.tags import TagConcurrencyLimitsCounter

from control_plane.core.tenancy import tenant_context
from control_plane.executions.models import TriggerEvent
from control_plane.organizations.models import UsageQuota
from control_plane.workflows import services as workflow_services
from control_plane.workflows.models import Workflow
from control_plane.workflows.triggers import trigger_create
from orchestration.rendering import build_job
from orchestration.repository import default_resources, make_repository
from orchestration.run_coordinator import FlowPilotRunCoordinator
from orchestration.schedules import make_workflow_schedules, schedule_name
from resources.control_plane import ControlPlaneResource
from sensors.trigger_events import make_trigger_event_sensor
from tests.factories import THREE_STEPS, make_published_workflow, run_workflow

pytestmark = pytest.mark.django_db

RESOURCE = ControlPlaneResource(settings_module="control_plane.settings.test")
PARIS = ZoneInfo("Europe/Paris")


def _schedule_trigger(workflow, cron="0 9 * * 1-5", tz="Europe/Paris", **kwargs):
    with tenant_context(workflow.organization_id):
        return trigger_create(
            workflow=workflow,
            created_by=None,
            kind="schedule",
            cron=cron,
            timezone=tz,
            inputs=kwargs.pop("inputs", {"name": "scheduled"}),
            **kwargs,
        )


def _set(workflow, **fields):
    with tenant_context(workflow.organization_id):
        Workflow.objects.filter(pk=workflow.pk).update(**fields)


def _schedule(trigger):
    [schedule] = [
        s
        for s in make_workflow_schedules(RESOURCE, RESOURCE.schedule_index())
        if s.name.endswith(f"__schedule_{trigger.pk}")
    ]
    return schedule


def _tick(schedule, instance, when=datetime(2026, 3, 2, 9, 0, tzinfo=PARIS)):
    context = build_schedule_context(instance=instance, scheduled_execution_time=when)
    return schedule.evaluate_tick(context)


@pytest.fixture
def instance():
    with DagsterInstance.ephemeral() as instance:
        yield instance


def _events():
    return list(TriggerEvent.objects.unscoped().select_related("execution").order_by("id"))


# -- rendering -----------------------------------------------------------------------------------


def test_one_schedule_per_enabled_trigger_of_an_active_workflow(published, org, user):
    paris = _schedule_trigger(published)
    new_york = _schedule_trigger(published, cron="30 7 * * *", tz="America/New_York")
    disabled = _schedule_trigger(published, enabled=False)
    paused = make_published_workflow(org, user, THREE_STEPS, slug="paused")
    on_paused = _schedule_trigger(paused)
    _set(paused, status=Workflow.Status.PAUSED)

    repo = make_repository(RESOURCE)

    names = {s.name for s in repo.schedule_defs}
    assert names == {
        "identity_cleanup_hourly",
        schedule_name("acme__triage", paris.pk),
        schedule_name("acme__triage", new_york.pk),
    }
    assert f"acme__triage__schedule_{disabled.pk}" not in names
    assert not any(name.endswith(f"_{on_paused.pk}") for name in names)
    first = repo.get_schedule_def(f"acme__triage__schedule_{paris.pk}")
    assert (first.cron_schedule, first.execution_timezone) == ("0 9 * * 1-5", "Europe/Paris")
    assert first.job_name == "acme__triage"
    assert first.default_status.value == "RUNNING"
    second = repo.get_schedule_def(f"acme__triage__schedule_{new_york.pk}")
    assert (second.cron_schedule, second.execution_timezone) == ("30 7 * * *", "America/New_York")


def test_schedule_ticks_follow_their_time_zone(published):
    paris = _schedule(_schedule_trigger(published, cron="0 9 * * *", tz="Europe/Paris"))
    new_york = _schedule(_schedule_trigger(published, cron="0 9 * * *", tz="America/New_York"))
    start = datetime(2026, 6, 1, 0, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    first_paris, first_new_york = (
        next(cron_string_iterator(start, s.cron_schedule, s.execution_timezone))
        for s in (paris, new_york)
    )
    assert first_paris.utcoffset().total_seconds() == 2 * 3600  # CEST
    assert (first_paris.hour, first_new_york.hour) == (9, 9)
    assert (first_new_york - first_paris).total_seconds() == 6 * 3600


# -- ticks ---------------------------------------------------------------------------------------


def test_a_tick_writes_one_event_and_requests_its_run(published, instance):
    schedule = _schedule(_schedule_trigger(published))

    result = _tick(schedule, instance)

    [event] = _events()
    assert event.kind == TriggerEvent.Kind.SCHEDULE
    assert event.execution.inputs == {"name": "scheduled"}
    assert event.payload["scheduled_for"] == "2026-03-02T08:00:00+00:00"
    [request] = result.run_requests
    assert isinstance(request, RunRequest)
    assert request.run_key == str(event.pk)
    assert request.run_config == {"inputs": {"name": "scheduled"}}
    assert request.tags["flowpilot/event"] == str(event.pk)
    assert request.tags["flowpilot/execution"] == str(event.execution_id)
    assert request.tags["flowpilot/org"] == "acme"
    assert request.tags["dagster/priority"] == "0"


def test_the_same_tick_twice_writes_no_second_event(published, instance):
    schedule = _schedule(_schedule_trigger(published))
    first = _tick(schedule, instance)
    again = _tick(schedule, instance, when=datetime(2026, 3, 2, 8, 0, tzinfo=ZoneInfo("UTC")))
    assert len(_events()) == 1
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in first.run_requests]
    _tick(schedule, instance, when=datetime(2026, 3, 3, 9, 0, tzinfo=PARIS))
    assert len(_events()) == 2


def test_a_retried_tick_whose_run_exists_is_skipped(published):
    schedule = _schedule(_schedule_trigger(published))
    with instance_for_test() as persistent:  # the daemon's context has an instance ref
        [request] = _tick(schedule, persistent).run_requests
        persistent.create_run_for_job(job_def=_noop_job(), run_id=None, tags=request.tags)
        again = _tick(schedule, persistent)
    assert not again.run_requests
    assert "already has its run" in again.skip_message


def test_over_quota_skips_and_writes_nothing(published, org, instance):
    schedule = _schedule(_schedule_trigger(published))
    with tenant_context(org.pk):
        UsageQuota.objects.filter(organization=org).update(runs_per_month=0)
    result = _tick(schedule, instance)
    assert not result.run_requests
    assert "quota" in result.skip_message
    assert _events() == []


def test_paused_workflow_skips(published, instance):
    schedule = _schedule(_schedule_trigger(published))
    _set(published, status=Workflow.Status.PAUSED)
    result = _tick(schedule, instance)
    assert not result.run_requests
    assert "paused" in result.skip_message
    assert _events() == []


def test_disabled_since_loading_skips(published, instance):
    trigger = _schedule_trigger(published)
    schedule = _schedule(trigger)
    with tenant_context(published.organization_id):
        type(trigger).objects.filter(pk=trigger.pk).update(enabled=False)
    result = _tick(schedule, instance)
    assert isinstance(result.skip_message, str) and "disabled" in result.skip_message


def test_the_sensor_leaves_a_fresh_schedule_event_to_its_schedule(published, instance):
    schedule = _schedule(_schedule_trigger(published))
    [request] = _tick(schedule, instance).run_requests
    sensor = make_trigger_event_sensor(RESOURCE, ["acme__triage"])
    assert not sensor.evaluate_tick(build_sensor_context(instance=instance)).run_requests
    # Once stale with no run (the schedule daemon died before creating it), the sweep starts it.
    sweeper = make_trigger_event_sensor(RESOURCE, ["acme__triage"], stale_seconds=0)
    swept = sweeper.evaluate_tick(build_sensor_context(instance=instance)).run_requests
    assert [r.run_key for r in swept] == [request.run_key]
    # With the schedule's run created, the sweep leaves it alone.
    instance.create_run_for_job(job_def=_noop_job(), run_id=None, tags=request.tags)
    again = sweeper.evaluate_tick(build_sensor_context(instance=instance))
    assert not again.run_requests


# -- priority ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("priority", "tag"), [("low", "-1"), ("normal", "0"), ("high", "1")])
def test_priority_tags(published, instance, priority, tag):
    with tenant_context(published.organization_id):
        workflow_services.workflow_update(workflow=published, priority=priority)
    version_id = RESOURCE.published_job_index()["acme__triage"]
    job = build_job(RESOURCE.workflow_spec(version_id), default_resources(RESOURCE))
    assert job.tags["dagster/priority"] == tag

    [request] = _tick(_schedule(_schedule_trigger(published)), instance).run_requests
    assert request.tags["dagster/priority"] == tag

    run_workflow(published)
    sensor = make_trigger_event_sensor(RESOURCE, ["acme__triage"])
    [sensed] = sensor.evaluate_tick(build_sensor_context(instance=instance)).run_requests
    assert sensed.tags["dagster/priority"] == tag


def test_priority_through_the_api(api, published):
    response = api.patch(f"/api/v1/workflows/{published.pk}", {"priority": "high"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["priority"] == "high"
    bad = api.patch(f"/api/v1/workflows/{published.pk}", {"priority": "urgent"}, format="json")
    assert bad.status_code == 400


# -- per-organization run limits -----------------------------------------------------------------


def _set_concurrent_runs(organization, value):
    with tenant_context(organization.pk):
        UsageQuota.objects.filter(organization=organization).update(concurrent_runs=value)


def _limits(config):
    return {
        limit["value"]: limit["limit"]
        for limit in config.tag_concurrency_limits
        if limit["key"] == "flowpilot/org" and isinstance(limit["value"], str)
    }


def test_queue_limits_follow_each_organizations_quota(org, other_org):
    _set_concurrent_runs(org, 2)
    _set_concurrent_runs(other_org, 5)
    now = [0.0]
    coordinator = FlowPilotRunCoordinator(
        dequeue_interval_seconds=1,
        limits_source=RESOURCE.concurrent_run_limits,
        quota_cache_seconds=5,
        clock=lambda: now[0],
    )

    config = coordinator.get_run_queue_config()
    assert _limits(config) == {"acme": 2, "globex": 5}
    [unique] = [x for x in config.tag_concurrency_limits if isinstance(x["value"], dict)]
    assert unique == {
        "key": "flowpilot/org",
        "value": {"applyLimitPerUniqueValue": True},
        "limit": 5,  # never tighter than an organization's own limit
    }

    _set_concurrent_runs(org, 3)
    now[0] = 4.0
    assert _limits(coordinator.get_run_queue_config())["acme"] == 2  # cached
    now[0] = 5.0
    assert _limits(coordinator.get_run_queue_config())["acme"] == 3

    _set_concurrent_runs(other_org, None)  # back to the plan's value
    now[0] = 10.0
    assert _limits(coordinator.get_run_queue_config())["globex"] == 2


def test_the_daemon_counter_blocks_per_organization(org, other_org):
    """What the QueuedRunCoordinatorDaemon does with the config: acme is full at 2 running,
    globex still has room at 2 of 5, an organization not seen yet gets the fallback."""
    _set_concurrent_runs(org, 2)
    _set_concurrent_runs(other_org, 5)
    coordinator = FlowPilotRunCoordinator(limits_source=RESOURCE.concurrent_run_limits)
    running = [_Run("acme"), _Run("acme"), _Run("globex"), _Run("globex")]
    counter = TagConcurrencyLimitsCounter(
        list(coordinator.get_run_queue_config().tag_concurrency_limits), running
    )
    assert counter.is_blocked(_Run("acme"))
    assert not counter.is_blocked(_Run("globex"))
    assert not counter.is_blocked(_Run("initech"))


def test_dagster_yaml_style_config_reaches_the_instance(org):
    _set_concurrent_runs(org, 4)
    overrides = {
        "run_coordinator": {
            "module": "orchestration.run_coordinator",
            "class": "FlowPilotRunCoordinator",
            "config": {
                "dequeue_interval_seconds": 1,
                "settings_module": "control_plane.settings.test",
                "quota_cache_seconds": 2.5,
            },
        }
    }
    with instance_for_test(overrides=overrides) as dagster_instance:
        coordinator = dagster_instance.run_coordinator
        assert isinstance(coordinator, FlowPilotRunCoordinator)
        assert coordinator.dequeue_interval_seconds == 1
        queue = dagster_instance.get_concurrency_config().run_queue_config
        assert _limits(queue)["acme"] == 4


def test_an_unreadable_quota_keeps_the_last_limits():
    calls = iter([{"acme": 3}])

    def source():
        return next(calls)  # StopIteration the second time: the database is away

    coordinator = FlowPilotRunCoordinator(limits_source=source, quota_cache_seconds=0)
    assert _limits(coordinator.get_run_queue_config()) == {"acme": 3}
    assert _limits(coordinator.get_run_queue_config()) == {"acme": 3}


class _Run:
    def __init__(self, org: str) -> None:
        self.tags = {"flowpilot/org": org}


def _noop_job():
    from dagster import job, op

    @op
    def noop():
        return None

    @job
    def noop_job():
        noop()

    return noop_job


def test_a_tick_records_when_its_trigger_last_fired(published, instance):
    trigger = _schedule_trigger(published)
    _tick(_schedule(trigger), instance)
    trigger.refresh_from_db()
    assert trigger.last_triggered_at is not None


def test_schedule_trigger_changes_reload_the_code_location(
    published, django_capture_on_commit_callbacks
):
    """A schedule is a Dagster definition: creating, changing or deleting one asks Dagster to
    reload once committed; other trigger kinds do not."""
    from control_plane.core import dagster
    from control_plane.workflows.triggers import trigger_delete, trigger_update

    def reloads(callbacks) -> int:
        return sum(getattr(c, "func", None) is dagster.reload_code_location for c in callbacks)

    with django_capture_on_commit_callbacks() as created:
        trigger = _schedule_trigger(published)
    with tenant_context(published.organization_id):
        with django_capture_on_commit_callbacks() as updated:
            trigger_update(trigger=trigger, cron="0 10 * * *")
        with django_capture_on_commit_callbacks() as deleted:
            trigger_delete(trigger=trigger)
        with django_capture_on_commit_callbacks() as webhook:
            trigger_create(workflow=published, created_by=None, kind="webhook")
    assert [reloads(c) for c in (created, updated, deleted, webhook)] == [1, 1, 1, 0]
