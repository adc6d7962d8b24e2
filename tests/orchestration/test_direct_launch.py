"""FlowPilot's run coordinator launching runs without queuing, on a real DagsterInstance on the
embedded PostgreSQL with warm run workers: a run with room starts at once; a run over its
organization's quota, behind queued runs, or without a warm worker waits in Dagster's queue; and
concurrent submits never take more slots than the quota has."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from dagster import DagsterEventType
from dagster._core.run_coordinator import SubmitRunContext
from dagster._core.run_coordinator.queued_run_coordinator import QueuedRunCoordinator
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.test_utils import instance_for_test, poll_for_finished_run

from control_plane.core.tenancy import tenant_context
from control_plane.executions.models import WorkflowExecution
from control_plane.organizations.models import UsageQuota
from orchestration.run_coordinator import (
    TAG_LAUNCH,
    FlowPilotRunCoordinator,
    _control_plane_limits,
)
from tests.factories import make_published_workflow
from tests.orchestration import warm_support as warm

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("warm_workers_exit"),
]

COORDINATOR = {"quota_cache_seconds": 0, "settle_seconds": 0.25}


@pytest.fixture(scope="module")
def instance(dagster_storage_url, worker_environment):
    patch, context = warm.warm_instance(
        dagster_storage_url, worker_environment, coordinator=COORDINATOR
    )
    try:
        with context as dagster_instance:
            yield dagster_instance
    finally:
        patch.undo()


@pytest.fixture(autouse=True)
def _empty_queue(instance):
    """Each test starts with nothing queued or running (runs of earlier tests are finished or
    canceled) and with a warm worker for the `flowpilot` code location."""
    for run in instance.get_runs():
        if not run.is_finished:
            instance.report_run_canceled(run, message="cleared between tests")
    yield


@pytest.fixture
def sleepy(org, user):
    return make_published_workflow(org, user, warm.SLEEPY, slug="sleepy")


def _quota(organization, concurrent_runs: int) -> None:
    with tenant_context(organization.pk):
        UsageQuota.objects.filter(organization=organization).update(concurrent_runs=concurrent_runs)


def _submit(instance, workflow, inputs=None):
    run, execution = warm.create_run(instance, workflow, inputs)
    return instance.submit_run(run.run_id, workspace=None), execution


def _warm(instance, workflow, inputs=None) -> None:
    """The first submit finds no warm worker: it queues the run and starts one."""
    run = instance.get_run_by_id(warm.create_run(instance, workflow, inputs)[0].run_id)
    launcher = instance.run_launcher
    if not launcher.ready_for(run):
        warm.wait_for(lambda: launcher.ready_for(run), 120, "a warm worker")
    instance.report_run_canceled(run, message="only warmed the worker")


def _enqueued(instance, run_id) -> bool:
    records = instance.get_records_for_run(run_id=run_id, of_type=DagsterEventType.RUN_ENQUEUED)
    return bool(records.records)


def test_a_run_with_room_starts_without_queuing(instance, published):
    _warm(instance, published)

    submitted, execution = _submit(instance, published, {"name": "direct"})

    assert submitted.status in (DagsterRunStatus.STARTING, DagsterRunStatus.STARTED)
    assert submitted.tags[TAG_LAUNCH] == "direct"
    assert not _enqueued(instance, submitted.run_id)
    assert poll_for_finished_run(instance, submitted.run_id, timeout=60).is_success
    assert warm.closed(execution).status == WorkflowExecution.Status.SUCCESS


def test_without_a_warm_worker_the_run_queues_and_a_worker_starts(
    dagster_storage_url, worker_environment, published
):
    patch, context = warm.warm_instance(
        dagster_storage_url, worker_environment, coordinator=COORDINATOR
    )
    try:
        with context as cold:
            submitted, _ = _submit(cold, published)
            assert submitted.status == DagsterRunStatus.QUEUED
            assert TAG_LAUNCH not in submitted.tags
            # ...and the next run of that code location can start at once.
            pool = cold.run_launcher.pool()
            warm.wait_for(lambda: pool.zygote_pids(), 120, "the worker warmed in the background")
            cold.report_run_canceled(submitted, message="queued: no daemon here")
            following, _ = _submit(cold, published)
            assert following.tags[TAG_LAUNCH] == "direct"
            assert poll_for_finished_run(cold, following.run_id, timeout=60).is_success
    finally:
        patch.undo()


def test_an_organization_at_its_quota_queues_the_next_run(instance, org, sleepy, echo_server):
    _quota(org, 1)
    slow = {"url": f"{echo_server.url}/sleep/5"}
    _warm(instance, sleepy, slow)

    first, _ = _submit(instance, sleepy, slow)
    second, _ = _submit(instance, sleepy, slow)

    assert first.tags[TAG_LAUNCH] == "direct"
    assert second.status == DagsterRunStatus.QUEUED and _enqueued(instance, second.run_id)
    instance.run_coordinator.cancel_run(second.run_id)
    instance.run_launcher.terminate(first.run_id)
    assert poll_for_finished_run(instance, first.run_id, timeout=60).is_finished


def test_another_organization_still_starts_at_once(
    instance, org, other_org, user, sleepy, echo_server
):
    _quota(org, 1)
    _warm(instance, sleepy, {"url": echo_server.url})
    theirs = make_published_workflow(other_org, user, warm.SLEEPY, slug="sleepy")
    slow = {"url": f"{echo_server.url}/sleep/5"}

    mine, _ = _submit(instance, sleepy, slow)
    other, _ = _submit(instance, theirs, slow)

    assert mine.tags[TAG_LAUNCH] == other.tags[TAG_LAUNCH] == "direct"
    for run in (mine, other):
        instance.run_launcher.terminate(run.run_id)
        assert poll_for_finished_run(instance, run.run_id, timeout=60).is_finished


def test_runs_waiting_in_the_queue_go_first(instance, org, published):
    _warm(instance, published)
    # A run queued earlier (the daemon has not dequeued it yet): newcomers queue behind it, so
    # the daemon's priorities and order still decide.
    waiting, _ = warm.create_run(instance, published)
    QueuedRunCoordinator.submit_run(instance.run_coordinator, SubmitRunContext(waiting, None))
    assert instance.get_run_by_id(waiting.run_id).status == DagsterRunStatus.QUEUED

    submitted, _ = _submit(instance, published)

    assert submitted.status == DagsterRunStatus.QUEUED


def test_concurrent_submits_never_take_more_slots_than_the_quota(
    instance, org, sleepy, echo_server
):
    _quota(org, 2)
    slow = {"url": f"{echo_server.url}/sleep/5"}
    _warm(instance, sleepy, slow)
    runs = [warm.create_run(instance, sleepy, slow)[0] for _ in range(6)]
    start = threading.Barrier(len(runs))

    def submit(run):
        start.wait()
        return instance.submit_run(run.run_id, workspace=None)

    with ThreadPoolExecutor(len(runs)) as pool:
        submitted = list(pool.map(submit, runs))

    direct = [r for r in submitted if r.tags.get(TAG_LAUNCH) == "direct"]
    queued = [r for r in submitted if r.status == DagsterRunStatus.QUEUED]
    assert (len(direct), len(queued)) == (2, 4)
    for run in queued:
        instance.run_coordinator.cancel_run(run.run_id)
    for run in direct:
        instance.run_launcher.terminate(run.run_id)
        assert poll_for_finished_run(instance, run.run_id, timeout=60).is_finished


def test_an_enqueue_right_after_a_direct_launch_waits_to_settle(instance, org, sleepy, echo_server):
    _quota(org, 1)
    slow = {"url": f"{echo_server.url}/sleep/5"}
    _warm(instance, sleepy, slow)

    first, _ = _submit(instance, sleepy, slow)
    second, _ = _submit(instance, sleepy, slow)

    started = instance.get_records_for_run(
        run_id=first.run_id, of_type=DagsterEventType.RUN_STARTING
    ).records[0]
    [enqueued] = instance.get_records_for_run(
        run_id=second.run_id, of_type=DagsterEventType.RUN_ENQUEUED
    ).records
    gap = enqueued.event_log_entry.timestamp - started.event_log_entry.timestamp
    assert gap >= COORDINATOR["settle_seconds"] * 0.9, gap
    instance.run_coordinator.cancel_run(second.run_id)
    instance.run_launcher.terminate(first.run_id)
    assert poll_for_finished_run(instance, first.run_id, timeout=60).is_finished


def test_launch_directly_off_queues_every_run(dagster_storage_url, worker_environment, published):
    patch, context = warm.warm_instance(
        dagster_storage_url, worker_environment, coordinator={"launch_directly": False}
    )
    try:
        with context as queued_only:
            submitted, _ = _submit(queued_only, published)
            assert submitted.status == DagsterRunStatus.QUEUED
            assert queued_only.run_launcher._pool is None  # no worker was even warmed
    finally:
        patch.undo()


def test_without_postgres_storage_every_run_queues(published, worker_environment, monkeypatch):
    for name, value in worker_environment.items():
        monkeypatch.setenv(name, value)
    sqlite = warm.overrides("unused", coordinator={})
    for storage in ("run_storage", "event_log_storage", "schedule_storage"):
        del sqlite[storage]
    with instance_for_test(overrides=sqlite) as sqlite_instance:
        assert isinstance(sqlite_instance.run_coordinator, FlowPilotRunCoordinator)
        run, _ = warm.create_run(sqlite_instance, published)
        submitted = sqlite_instance.submit_run(run.run_id, workspace=None)
        assert submitted.status == DagsterRunStatus.QUEUED
        assert sqlite_instance.run_launcher._pool is None  # no lock to share: never direct


def test_quotas_are_read_from_the_webservers_event_loop(org):
    """The webserver submits runs from its event loop, where Django refuses database calls."""
    _quota(org, 3)
    read = _control_plane_limits(warm.SETTINGS)

    async def submit_from_the_loop():
        return read()

    assert asyncio.run(submit_from_the_loop())["acme"] == 3
