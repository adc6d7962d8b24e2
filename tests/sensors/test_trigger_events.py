"""The trigger sensor turns pending TriggerEvents into exactly one RunRequest each."""

from __future__ import annotations

import pytest
from dagster import DagsterInstance, RunRequest, build_sensor_context
from django.utils import timezone

from control_plane.executions.models import TriggerEvent
from resources.control_plane import ControlPlaneResource
from sensors.trigger_events import make_trigger_event_sensor
from tests.factories import THREE_STEPS, make_published_workflow, run_workflow

pytestmark = pytest.mark.django_db


def _evaluate(sensor, instance, cursor=None):
    context = build_sensor_context(instance=instance, cursor=cursor)
    result = sensor.evaluate_tick(context)
    return result


@pytest.fixture
def instance():
    with DagsterInstance.ephemeral() as instance:
        yield instance


def test_one_run_request_per_pending_event(published, instance, org, user):
    other = make_published_workflow(org, user, THREE_STEPS, slug="other")
    executions = [run_workflow(published, inputs={"name": f"n{i}"}) for i in range(3)]
    executions.append(run_workflow(other))
    sensor = make_trigger_event_sensor(ControlPlaneResource(), ["acme__other", "acme__triage"])

    result = _evaluate(sensor, instance)

    events = {e.execution_id: e for e in TriggerEvent.objects.unscoped().all()}
    assert [r.run_key for r in result.run_requests] == [str(events[x.pk].pk) for x in executions]
    first = result.run_requests[0]
    assert isinstance(first, RunRequest)
    assert first.job_name == "acme__triage"
    assert first.run_config == {"inputs": {"name": "n0"}}
    assert first.tags["flowpilot/execution"] == str(executions[0].pk)
    assert result.run_requests[-1].job_name == "acme__other"
    assert result.cursor == str(max(e.pk for e in events.values()))


def test_evaluating_twice_yields_no_duplicate(published, instance):
    run_workflow(published)
    sensor = make_trigger_event_sensor(ControlPlaneResource(), ["acme__triage"])
    first = _evaluate(sensor, instance)
    assert len(first.run_requests) == 1
    second = _evaluate(sensor, instance, cursor=first.cursor)
    assert not second.run_requests
    assert second.skip_message == "no pending trigger events"


def test_stale_claimed_event_with_a_run_is_not_requested_again(published, instance):
    execution = run_workflow(published)
    event = execution.trigger_event
    sensor = make_trigger_event_sensor(ControlPlaneResource(), ["acme__triage"], stale_seconds=0)
    first = _evaluate(sensor, instance)
    [request] = first.run_requests
    event.refresh_from_db()
    assert event.status == TriggerEvent.Status.LAUNCHING  # claimed before it was requested
    # The run was created (as the daemon does), but has not started: the sweep finds it by its
    # event tag and only records it.
    run = instance.create_run_for_job(job_def=_noop_job(), run_id=None, tags=request.tags)
    again = _evaluate(sensor, instance, cursor=first.cursor)
    assert not again.run_requests
    event.refresh_from_db()
    assert event.status == TriggerEvent.Status.LAUNCHED
    assert event.dagster_run_id == run.run_id


def test_stale_pending_event_without_a_run_is_swept(published, instance):
    run_workflow(published)
    sensor = make_trigger_event_sensor(ControlPlaneResource(), ["acme__triage"], stale_seconds=0)
    first = _evaluate(sensor, instance)
    # The daemon died before creating the run: the next sweep requests it again, same run_key.
    again = _evaluate(sensor, instance, cursor=first.cursor)
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in first.run_requests]


def test_event_for_a_job_not_loaded_yet_waits(published, instance):
    run_workflow(published)
    sensor = make_trigger_event_sensor(ControlPlaneResource(), ["acme__something_else"])
    result = _evaluate(sensor, instance)
    assert not result.run_requests


def test_the_page_wraps_round_to_older_pending_events(published, instance, org, user):
    """An event the sensor passed over (its job was not loaded yet) is picked up once it can
    be launched, although the cursor is past it."""
    execution = run_workflow(published)
    event_id = execution.trigger_event.pk
    without_the_job = make_trigger_event_sensor(ControlPlaneResource(), ["acme__other"])
    passed = _evaluate(without_the_job, instance)
    assert not passed.run_requests and passed.cursor == str(event_id)
    with_the_job = make_trigger_event_sensor(ControlPlaneResource(), ["acme__triage"])
    [request] = _evaluate(with_the_job, instance, cursor=passed.cursor).run_requests
    assert request.run_key == str(event_id)


def test_the_sweep_leaves_another_code_locations_claims(published, instance, org, user):
    """With code-location shards each location's sensor sweeps only its own jobs' events."""
    other = make_published_workflow(org, user, THREE_STEPS, slug="other-one")
    mine, theirs = run_workflow(published), run_workflow(other)
    for execution in (mine, theirs):
        TriggerEvent.objects.unscoped().filter(execution=execution).update(
            status=TriggerEvent.Status.LAUNCHING, claimed_at=timezone.now()
        )
    sensor = make_trigger_event_sensor(ControlPlaneResource(), ["acme__triage"], stale_seconds=0)
    [request] = _evaluate(sensor, instance).run_requests
    assert request.run_key == str(mine.trigger_event.pk)
    sensor = make_trigger_event_sensor(ControlPlaneResource(), ["acme__other_one"], stale_seconds=0)
    [request] = _evaluate(sensor, instance).run_requests  # its job name: hyphens as underscores
    assert request.run_key == str(theirs.trigger_event.pk)


def test_a_canceled_event_is_never_requested(published, instance):
    execution = run_workflow(published)
    TriggerEvent.objects.unscoped().filter(execution=execution).update(
        status=TriggerEvent.Status.CANCELED
    )
    sensor = make_trigger_event_sensor(ControlPlaneResource(), ["acme__triage"], stale_seconds=0)
    assert not _evaluate(sensor, instance).run_requests


def _noop_job():
    from dagster import job, op

    @op
    def noop():
        return None

    @job
    def noop_job():
        noop()

    return noop_job
