"""The fast path (control_plane/executions/launch.py): a committed trigger event launched through
Dagster's GraphQL right after commit, the claim that keeps it and the trigger sensor from both
launching one event, and the sensor's sweep of claims whose launch went wrong.

Dagster is the real `dagster-webserver` on the real code location (tests/dagster_support.py),
its runs in Postgres; failures come from tests/fakes/flaky_proxy.py between the control plane
and the webserver. Tests are transactional: the launcher threads, the webserver's code server
and the sensor see only committed rows, as in production."""

from __future__ import annotations

import threading
import time

import pytest
from dagster import RunRequest, build_sensor_context
from django.db import connection

from control_plane.core.tenancy import tenant_context
from control_plane.executions import launch
from control_plane.executions.models import TriggerEvent, WorkflowExecution
from control_plane.workflows import triggers
from resources.control_plane import ControlPlaneResource
from sensors.trigger_events import make_trigger_event_sensor
from tests.conftest import bearer_token
from tests.dagster_support import DagsterWebserver, start_webserver
from tests.e2e.support import free_port
from tests.factories import THREE_STEPS, make_published_workflow, run_workflow
from tests.fakes.flaky_proxy import FlakyProxy

pytestmark = pytest.mark.django_db(transaction=True)

RESOURCE = ControlPlaneResource(settings_module="control_plane.settings.test")
JOB = "acme__triage"


@pytest.fixture(scope="module")
def webserver(django_db_setup, django_db_blocker, tmp_path_factory):
    with django_db_blocker.unblock():
        settings_dict = dict(connection.settings_dict)
    yield from start_webserver(settings_dict, tmp_path_factory.mktemp("dagster"))


@pytest.fixture
def fast(settings):
    """Timeouts for a real webserver on a busy machine. The on-commit hook stays off unless a
    test turns it on (the launch functions are called directly); every launch started is
    finished before the test's rows are flushed."""
    settings.DAGSTER_TIMEOUT_SECONDS = 10
    settings.FLOWPILOT_LAUNCH_STALE_SECONDS = 60
    settings.FLOWPILOT_FAST_LAUNCH_GRACE_SECONDS = 60
    yield settings
    assert launch.fast_launch_wait(timeout=60)


@pytest.fixture
def loaded(published, webserver: DagsterWebserver):
    """The published workflow's job, loaded in the webserver's code location."""
    webserver.reload()
    return published


@pytest.fixture
def proxy(webserver: DagsterWebserver, fast):
    with FlakyProxy(webserver.url, hold_seconds=2.0) as flaky:
        fast.DAGSTER_URL = flaky.url
        yield flaky
        flaky.gate.set()


def _event(execution) -> TriggerEvent:
    return TriggerEvent.objects.unscoped().get(execution_id=execution.pk)


def _sweeper(stale_seconds: float = 0):
    return make_trigger_event_sensor(RESOURCE, [JOB], stale_seconds=stale_seconds)


def _tick(sensor, instance, cursor=None):
    return sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=cursor))


def _wait(check, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached in {timeout}s")


# -- the claim -----------------------------------------------------------------------------------


def test_threads_claiming_one_event_exactly_one_wins(published):
    events = [_event(run_workflow(published)).pk for _ in range(20)]
    threads, wins = 8, []
    lock, barrier = threading.Lock(), threading.Barrier(8)

    def claimer() -> None:
        try:
            barrier.wait()
            for pk in events:
                won = launch.trigger_events_claim(event_ids=[pk])
                with lock:
                    wins.extend(won)
        finally:
            connection.close()

    workers = [threading.Thread(target=claimer) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(wins) == sorted(events)  # each event won once, by one thread
    assert set(
        TriggerEvent.objects.unscoped().filter(pk__in=events).values_list("status", flat=True)
    ) == {TriggerEvent.Status.LAUNCHING}


def test_fast_path_and_sensor_racing_launch_each_event_once(loaded, webserver, proxy, fast):
    """Events commit in a burst; the on-commit pool launches each through the real
    webserver while the sensor ticks with no grace period: every event is launched by exactly
    one of them (a run in Dagster from the fast path, or a RunRequest from the sensor)."""
    fast.FLOWPILOT_FAST_LAUNCH = True
    fast.FLOWPILOT_FAST_LAUNCH_GRACE_SECONDS = 0
    events: list[int] = []

    def trigger() -> None:
        try:
            for _ in range(30):  # faster than the pool launches: its queue backs up
                events.append(_event(run_workflow(loaded)).pk)
        finally:
            connection.close()

    creator = threading.Thread(target=trigger)
    creator.start()
    sensor, requested, cursor = _sweeper(stale_seconds=60), [], None
    while creator.is_alive() or TriggerEvent.objects.unscoped().filter(status="pending").exists():
        result = _tick(sensor, webserver.instance, cursor)
        cursor = result.cursor
        requested += [int(r.run_key) for r in result.run_requests]
        time.sleep(0.02)
    creator.join()
    assert launch.fast_launch_wait(timeout=60)

    runs = {pk: webserver.runs_tagged("flowpilot/event", str(pk)) for pk in events}
    by_fast_path = {pk for pk, found in runs.items() if found}
    assert len(requested) == len(set(requested))
    assert by_fast_path.isdisjoint(requested)
    assert by_fast_path | set(requested) == set(events)
    assert by_fast_path and requested, (len(by_fast_path), len(requested))  # both took part
    for pk in by_fast_path:
        [run] = runs[pk]
        event = _event_by_pk(pk)
        assert event.status == TriggerEvent.Status.LAUNCHED and event.dagster_run_id == run.run_id
    for pk in requested:
        assert _event_by_pk(pk).status == TriggerEvent.Status.LAUNCHING  # until its run exists


def _event_by_pk(pk: int) -> TriggerEvent:
    return TriggerEvent.objects.unscoped().get(pk=pk)


def test_an_event_the_sensor_claimed_is_not_launched_again(published, settings):
    with FlakyProxy("http://127.0.0.1:9") as flaky:
        settings.DAGSTER_URL = flaky.url
        execution = run_workflow(published)
        [request] = _tick(_sweeper(stale_seconds=60), _ephemeral()).run_requests
        assert launch.trigger_event_launch(event_id=_event(execution).pk) == launch.TAKEN
    assert sum(flaky.counts.values()) == 0  # nothing was sent to Dagster
    assert request.run_key == str(_event(execution).pk)


def _ephemeral():
    from dagster import DagsterInstance

    return DagsterInstance.ephemeral()


def test_sensor_leaves_young_events_to_the_fast_path(published, settings):
    execution = run_workflow(published)  # written with the fast path off: nobody launched it
    settings.FLOWPILOT_FAST_LAUNCH = True
    settings.FLOWPILOT_FAST_LAUNCH_GRACE_SECONDS = 60
    sensor = _sweeper(stale_seconds=60)
    assert not _tick(sensor, _ephemeral()).run_requests
    assert _event(execution).status == TriggerEvent.Status.PENDING
    settings.FLOWPILOT_FAST_LAUNCH_GRACE_SECONDS = 0  # the fast path had its chance
    [request] = _tick(sensor, _ephemeral()).run_requests
    assert request.run_key == str(_event(execution).pk)
    assert _event(execution).status == TriggerEvent.Status.LAUNCHING


@pytest.mark.django_db
def test_fast_path_is_off_for_schedule_events(
    published, settings, django_capture_on_commit_callbacks
):
    settings.FLOWPILOT_FAST_LAUNCH = True
    with django_capture_on_commit_callbacks() as callbacks:
        run_workflow(published, kind=TriggerEvent.Kind.SCHEDULE)
    assert not callbacks
    with django_capture_on_commit_callbacks() as callbacks:
        run_workflow(published, kind=TriggerEvent.Kind.API)
    assert len(callbacks) == 1


# -- the fast path against the real webserver ----------------------------------------------------


def test_webhook_answers_at_once_and_its_run_is_launched(loaded, webserver, proxy, fast, org):
    from rest_framework.test import APIClient

    fast.FLOWPILOT_FAST_LAUNCH = True
    with tenant_context(org.pk):
        hook = triggers.trigger_create(workflow=loaded, created_by=None, kind="webhook")
    proxy.script("gated")  # the launch waits at the proxy until the test opens the gate
    response = APIClient().post(
        f"/hooks/{hook.webhook_token}", data=b"{}", content_type="application/json"
    )
    # Answered while the launch is still held at the gate: the 202 does not wait for Dagster.
    assert response.status_code == 202, response.content
    event = _event_by_pk(response.json()["event_id"])
    _wait(lambda: proxy.counts["gated"] == 1, what="the launch at the proxy")
    assert _event_by_pk(event.pk).status == TriggerEvent.Status.LAUNCHING  # in flight, claimed
    proxy.gate.set()
    assert launch.fast_launch_wait(timeout=60)

    event = _event_by_pk(event.pk)
    assert event.status == TriggerEvent.Status.LAUNCHED and event.launched_at
    [run] = webserver.runs_tagged("flowpilot/event", str(event.pk))
    assert run.run_id == event.dagster_run_id
    assert run.job_name == JOB and run.status.value == "QUEUED"
    assert run.run_config == {"inputs": event.execution.inputs}
    assert run.tags["flowpilot/execution"] == str(event.execution_id)
    assert run.tags["flowpilot/org"] == "acme"  # the job's own tags are kept
    assert run.tags["dagster/priority"] == "0"
    # Nothing is left for the sensor.
    assert not _tick(_sweeper(), webserver.instance).run_requests


def test_a_502_after_the_run_was_made_is_recorded_by_the_sweep(loaded, webserver, proxy):
    execution = run_workflow(loaded)
    event = _event(execution)
    proxy.script("bad_gateway")
    assert launch.trigger_event_launch(event_id=event.pk) == launch.UNKNOWN
    assert _event(execution).status == TriggerEvent.Status.LAUNCHING
    [run] = webserver.runs_tagged("flowpilot/event", str(event.pk))  # Dagster did launch it
    assert not _tick(_sweeper(stale_seconds=60), webserver.instance).run_requests  # not stale yet
    swept = _tick(_sweeper(stale_seconds=0), webserver.instance)
    assert not swept.run_requests
    event = _event(execution)
    assert event.status == TriggerEvent.Status.LAUNCHED and event.dagster_run_id == run.run_id
    assert len(webserver.runs_tagged("flowpilot/event", str(event.pk))) == 1


def test_an_answer_held_past_the_timeout_is_recorded_by_the_sweep(loaded, webserver, proxy, fast):
    execution = run_workflow(loaded)
    event = _event(execution)
    fast.DAGSTER_TIMEOUT_SECONDS = 1  # the proxy holds the answer for 2 s
    proxy.script("hold")
    assert launch.trigger_event_launch(event_id=event.pk) == launch.UNKNOWN
    [run] = webserver.runs_tagged("flowpilot/event", str(event.pk))
    assert not _tick(_sweeper(stale_seconds=0), webserver.instance).run_requests
    assert _event(execution).dagster_run_id == run.run_id


def test_a_reset_before_forwarding_is_requested_by_the_sweep(loaded, webserver, proxy):
    execution = run_workflow(loaded)
    event = _event(execution)
    proxy.script("refuse")
    assert launch.trigger_event_launch(event_id=event.pk) == launch.UNKNOWN
    assert proxy.forwarded == 0 and not webserver.runs_tagged("flowpilot/event", str(event.pk))
    first_claim = _event(execution).claimed_at

    [request] = _tick(_sweeper(stale_seconds=0), webserver.instance).run_requests
    assert isinstance(request, RunRequest) and request.run_key == str(event.pk)
    assert request.job_name == JOB and request.tags["flowpilot/event"] == str(event.pk)
    assert _event(execution).claimed_at > first_claim  # claimed again by the sweep
    assert not _tick(_sweeper(stale_seconds=60), webserver.instance).run_requests  # fresh claim
    # The daemon creates the requested run; the next sweep records it, and requests nothing.
    run = webserver.instance.create_run_for_job(job_def=_noop_job(), run_id=None, tags=request.tags)
    assert not _tick(_sweeper(stale_seconds=0), webserver.instance).run_requests
    assert _event(execution).status == TriggerEvent.Status.LAUNCHED
    assert _event(execution).dagster_run_id == run.run_id


def test_refused_connection_hands_the_event_back(published, fast):
    fast.DAGSTER_URL = f"http://127.0.0.1:{free_port()}"  # nothing listens
    execution = run_workflow(published)
    assert launch.trigger_event_launch(event_id=_event(execution).pk) == launch.RELEASED
    event = _event(execution)
    assert event.status == TriggerEvent.Status.PENDING and event.claimed_at is not None
    # Tried and handed back: the sensor takes it at once, inside the grace period.
    fast.FLOWPILOT_FAST_LAUNCH = True
    [request] = _tick(_sweeper(stale_seconds=60), _ephemeral()).run_requests
    assert request.run_key == str(event.pk)


def test_a_job_dagster_has_not_loaded_hands_the_event_back(org, user, webserver, proxy, fast):
    fast.DAGSTER_URL = f"http://127.0.0.1:{free_port()}"  # the publish's reload goes nowhere
    unloaded = make_published_workflow(org, user, THREE_STEPS, slug="unloaded")
    fast.DAGSTER_URL = proxy.url
    execution = run_workflow(unloaded)
    assert launch.trigger_event_launch(event_id=_event(execution).pk) == launch.RELEASED
    assert _event(execution).status == TriggerEvent.Status.PENDING
    assert proxy.forwarded == 1


def test_the_pool_launches_in_the_background(published, fast):
    fast.DAGSTER_URL = f"http://127.0.0.1:{free_port()}"
    execution = run_workflow(published)
    future = launch.fast_launch_submit(_event(execution).pk)
    assert future is not None and future.result(timeout=30) == launch.RELEASED
    assert launch.fast_launch_submit(10**12).result(timeout=30) == launch.TAKEN  # no such event
    assert launch.fast_launch_wait(timeout=1)


def test_a_claim_too_old_to_send_is_handed_back_unsent(published, fast):
    """A launch must be over before the sweep may take its event: one whose claim is older
    than the stale threshold less three timeouts when the request would leave is not sent."""
    with FlakyProxy("http://127.0.0.1:9") as flaky:
        fast.DAGSTER_URL = flaky.url
        fast.DAGSTER_TIMEOUT_SECONDS = 1
        fast.FLOWPILOT_LAUNCH_STALE_SECONDS = 2.5  # nothing is left for the request to use
        execution = run_workflow(published)
        assert launch.trigger_event_launch(event_id=_event(execution).pk) == launch.RELEASED
    assert sum(flaky.counts.values()) == 0
    assert _event(execution).status == TriggerEvent.Status.PENDING


@pytest.mark.django_db
def test_a_stale_threshold_a_launch_could_outlast_is_refused():
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "control_plane.settings.dev",
        "DAGSTER_TIMEOUT_SECONDS": "5",
        "FLOWPILOT_LAUNCH_STALE_SECONDS": "15",
    }
    code = "import django; django.setup()"
    refused = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert refused.returncode != 0
    assert "FLOWPILOT_LAUNCH_STALE_SECONDS (15) must be at least 4 x" in refused.stderr
    env["FLOWPILOT_LAUNCH_STALE_SECONDS"] = "20"
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


# -- cancel while launching ----------------------------------------------------------------------


def test_cancel_while_the_launch_is_in_flight_withdraws_and_stops_the_run(
    loaded, webserver, proxy, org, user
):
    from rest_framework.test import APIClient

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {bearer_token(user)}")
    execution = run_workflow(loaded)
    event = _event(execution)
    proxy.script("gated", "pass")  # the launch waits at the proxy; the terminate goes through
    future = launch.fast_launch_submit(event.pk)
    _wait(lambda: proxy.counts["gated"] == 1, what="the launch at the proxy")

    response = api.post(f"/api/v1/executions/{execution.pk}/cancel")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "canceled"
    assert _event(execution).status == TriggerEvent.Status.CANCELED
    proxy.gate.set()
    assert future.result(timeout=60) == launch.WITHDRAWN

    [run] = webserver.runs_tagged("flowpilot/event", str(event.pk))
    assert _wait(
        lambda: (
            webserver.instance.get_run_by_id(run.run_id).status.value in ("CANCELED", "CANCELING")
        ),
        what="the run canceled",
    )
    # The sweep never touches a canceled event.
    assert not _tick(_sweeper(stale_seconds=0), webserver.instance).run_requests
    stored = WorkflowExecution.objects.unscoped().get(pk=execution.pk)
    assert stored.status == "canceled" and _event(execution).status == "canceled"


def test_cancel_after_the_launcher_died_withdraws_the_claimed_event(api, published):
    execution = run_workflow(published)
    event = _event(execution)
    assert launch.trigger_events_claim(event_ids=[event.pk])  # claimed, then the process died
    response = api.post(f"/api/v1/executions/{execution.pk}/cancel")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "canceled"
    assert _event(execution).status == TriggerEvent.Status.CANCELED
    assert not _tick(_sweeper(stale_seconds=0), _ephemeral()).run_requests
    assert launch.trigger_event_launch(event_id=event.pk) == launch.TAKEN


def _noop_job():
    from dagster import job, op

    @op
    def noop():
        return None

    @job(name=JOB)
    def noop_job():
        noop()

    return noop_job
