"""The warm run launcher through a real DagsterInstance on the embedded PostgreSQL: runs forked
from a pre-imported zygote are ordinary Dagster runs, close their FlowPilot execution
themselves, can be terminated and health-checked, and leave no process behind."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest
import yaml
from dagster import DagsterEventType, DagsterInstance
from dagster._core.launcher import WorkerStatus
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.test_utils import instance_for_test, poll_for_finished_run
from dagster._daemon.monitoring.run_monitoring import monitor_started_run

from control_plane.executions.models import WorkflowExecution
from flowpilot import shards
from orchestration import warm_worker
from orchestration.run_launcher import WarmRunLauncher, worker_info
from orchestration.storage import storage_config
from orchestration.warm_worker import process_alive
from sensors.execution_status import run_failure_message
from tests.factories import THREE_STEPS, make_published_workflow, steps_of
from tests.orchestration import warm_support as warm

pytestmark = pytest.mark.usefixtures("warm_workers_exit")


@pytest.fixture(scope="module")
def instance(dagster_storage_url, worker_environment):
    patch, context = warm.warm_instance(dagster_storage_url, worker_environment)
    try:
        with context as dagster_instance:
            yield dagster_instance
    finally:
        patch.undo()


# -- configuration (no process) -----------------------------------------------------------------


def test_dagster_yaml_configures_the_launcher_without_starting_workers(monkeypatch):
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", warm.SETTINGS)
    section = yaml.safe_load((warm.ROOT / "dagster.yaml").read_text())["run_launcher"]
    with instance_for_test(overrides={"run_launcher": section}) as dagster_instance:
        launcher = dagster_instance.run_launcher
        assert isinstance(launcher, WarmRunLauncher)
        assert launcher.settings_module == warm.SETTINGS
        assert launcher.supports_check_run_worker_health
        assert launcher._pool is None  # the webserver instantiates it too: workers start lazily


# -- runs through the launcher ------------------------------------------------------------------

slow = pytest.mark.slow
transactional = pytest.mark.django_db(transaction=True)


@slow
@transactional
def test_a_run_succeeds_in_a_forked_worker_and_closes_its_execution(instance, published):
    run, execution = warm.launch(instance, published, {"name": "warm"})

    finished = poll_for_finished_run(instance, run.run_id, timeout=120)

    assert finished.status == DagsterRunStatus.SUCCESS, warm.messages(instance, run.run_id)
    info = worker_info(finished)
    assert (
        info["pid"] != os.getpid() and info["zygote"] in instance.run_launcher.pool().zygote_pids()
    )
    assert f"Started process for run (pid: {info['pid']})." in warm.messages(instance, run.run_id)
    # No run-status sensor runs here: the worker closed the execution itself.
    closed = warm.closed(execution)
    assert closed.status == WorkflowExecution.Status.SUCCESS
    assert closed.dagster_run_id == run.run_id and closed.finished_at is not None
    assert [s.status for s in steps_of(closed)] == ["success"] * 3
    assert steps_of(closed)[1].output == {"result": "HI WARM"}
    warm.wait_for(lambda: not process_alive(info["pid"], info["start"]), 10, "worker exit")


@slow
@transactional
def test_a_failed_run_closes_its_execution_with_the_sensors_message(instance, org, user):
    workflow = make_published_workflow(org, user, warm.SLEEPY, slug="sleepy")
    run, execution = warm.launch(instance, workflow, {"url": "http://127.0.0.1:9/refused"})

    finished = poll_for_finished_run(instance, run.run_id, timeout=120)

    assert finished.status == DagsterRunStatus.FAILURE
    [failure] = instance.get_records_for_run(
        run_id=run.run_id, of_type=DagsterEventType.STEP_FAILURE
    ).records
    expected = run_failure_message([failure.event_log_entry.dagster_event], None)
    closed = warm.closed(execution)
    assert closed.status == WorkflowExecution.Status.FAILURE
    assert closed.error == expected and closed.error.startswith("wait: ")


@slow
@transactional
def test_each_code_location_of_the_runs_origin_has_its_own_zygote(instance, published):
    first, _ = warm.launch(instance, published)
    # The same organization's job in a sharded workspace: another location and attribute.
    shard = shards.shard_of("acme", 2)
    run, execution = warm.launch(
        instance,
        published,
        attribute=shards.attribute(shard, 2),
        location_name=shards.location_name(shard, 2),
    )

    finished = [poll_for_finished_run(instance, r.run_id, timeout=120) for r in (first, run)]

    assert [r.status for r in finished] == [DagsterRunStatus.SUCCESS] * 2
    assert worker_info(finished[0])["zygote"] != worker_info(finished[1])["zygote"]
    assert warm.closed(execution).status == WorkflowExecution.Status.SUCCESS


@slow
@transactional
def test_two_concurrent_runs_overlap_in_two_workers(instance, org, user, echo_server):
    workflow = make_published_workflow(org, user, warm.SLEEPY, slug="sleepy")
    url = f"{echo_server.url}/sleep/2"
    first, _ = warm.launch(instance, workflow, {"url": url})
    second, _ = warm.launch(instance, workflow, {"url": url})

    done = [poll_for_finished_run(instance, r.run_id, timeout=120) for r in (first, second)]

    assert [r.status for r in done] == [DagsterRunStatus.SUCCESS] * 2
    workers = [worker_info(r) for r in done]
    assert workers[0]["pid"] != workers[1]["pid"]
    assert workers[0]["zygote"] == workers[1]["zygote"]
    records = [instance.get_run_record_by_id(r.run_id) for r in done]
    assert records[1].start_time < records[0].end_time  # they ran at the same time


@slow
@transactional
def test_a_workflow_published_after_the_pool_started_runs(instance, published, org, user):
    before, _ = warm.launch(instance, published)
    assert poll_for_finished_run(instance, before.run_id, timeout=120).is_success
    zygote = worker_info(instance.get_run_by_id(before.run_id))["zygote"]

    later = make_published_workflow(org, user, THREE_STEPS, slug="later")
    run, execution = warm.launch(instance, later, {"name": "late"})

    finished = poll_for_finished_run(instance, run.run_id, timeout=120)
    assert finished.status == DagsterRunStatus.SUCCESS, warm.messages(instance, run.run_id)
    assert worker_info(finished)["zygote"] == zygote  # the same warm zygote, no restart
    assert warm.closed(execution).status == WorkflowExecution.Status.SUCCESS


@slow
@transactional
def test_terminate_from_another_process_cancels_the_run_and_ends_the_worker(
    instance, org, user, echo_server
):
    workflow = make_published_workflow(org, user, warm.SLEEPY, slug="sleepy")
    run, execution = warm.launch(instance, workflow, {"url": f"{echo_server.url}/sleep/30"})
    info = warm.worker_of(instance, run.run_id)
    warm.step_started(instance, run.run_id, "wait")

    # The webserver has its own instance and launcher (no pool): it terminates by the tag.
    with DagsterInstance.from_ref(instance.get_ref()) as webserver:
        assert webserver.run_launcher.terminate(run.run_id) is True

    finished = poll_for_finished_run(instance, run.run_id, timeout=60)
    assert finished.status == DagsterRunStatus.CANCELED, warm.messages(instance, run.run_id)
    warm.wait_for(lambda: not process_alive(info["pid"], info["start"]), 15, "worker exit")
    closed = warm.closed(execution)
    assert closed.status == WorkflowExecution.Status.CANCELED
    assert closed.error == "canceled"


@slow
@transactional
def test_terminate_from_another_host_cancels_through_the_cancellation_thread(
    instance, org, user, echo_server
):
    workflow = make_published_workflow(org, user, warm.SLEEPY, slug="sleepy")
    run, execution = warm.launch(instance, workflow, {"url": f"{echo_server.url}/sleep/30"})
    info = warm.worker_of(instance, run.run_id)
    warm.step_started(instance, run.run_id, "wait")

    with DagsterInstance.from_ref(instance.get_ref()) as webserver:
        webserver.run_launcher.hostname = "another-container"  # cannot signal the worker's pid
        assert webserver.run_launcher.terminate(run.run_id) is True

    finished = poll_for_finished_run(instance, run.run_id, timeout=60)
    assert finished.status == DagsterRunStatus.CANCELED, warm.messages(instance, run.run_id)
    warm.wait_for(lambda: not process_alive(info["pid"], info["start"]), 15, "worker exit")
    assert warm.closed(execution).status == WorkflowExecution.Status.CANCELED


@slow
@transactional
def test_a_killed_worker_is_reported_by_the_health_check(instance, org, user, echo_server):
    workflow = make_published_workflow(org, user, warm.SLEEPY, slug="sleepy")
    run, _ = warm.launch(instance, workflow, {"url": f"{echo_server.url}/sleep/30"})
    info = warm.worker_of(instance, run.run_id)
    warm.step_started(instance, run.run_id, "wait")
    launcher = instance.run_launcher
    assert launcher.check_run_worker_health(instance.get_run_by_id(run.run_id)).status == (
        WorkerStatus.RUNNING
    )

    os.kill(info["pid"], signal.SIGKILL)
    warm.wait_for(lambda: not process_alive(info["pid"], info["start"]), 10, "worker death")

    health = launcher.check_run_worker_health(instance.get_run_by_id(run.run_id))
    assert health.status == WorkerStatus.FAILED
    assert str(info["pid"]) in health.msg
    # Dagster's run monitor acts on it: the run is marked failed.
    record = instance.get_run_record_by_id(run.run_id)
    monitor_started_run(instance, None, record, logging.getLogger("test"))
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE


@slow
@transactional
def test_a_dead_zygote_is_replaced(instance, published):
    first, _ = warm.launch(instance, published)
    assert poll_for_finished_run(instance, first.run_id, timeout=120).is_success
    zygote = worker_info(instance.get_run_by_id(first.run_id))["zygote"]
    os.kill(zygote, signal.SIGKILL)
    warm.wait_for(
        lambda: zygote not in instance.run_launcher.pool().zygote_pids(), 10, "zygote death"
    )

    run, _ = warm.launch(instance, published)

    assert poll_for_finished_run(instance, run.run_id, timeout=120).is_success
    assert worker_info(instance.get_run_by_id(run.run_id))["zygote"] != zygote


@slow
@transactional
def test_a_zygote_whose_code_changed_is_replaced(instance, published):
    first, _ = warm.launch(instance, published)
    assert poll_for_finished_run(instance, first.run_id, timeout=120).is_success
    zygote = worker_info(instance.get_run_by_id(first.run_id))["zygote"]
    source = Path(warm_worker.__file__)
    saved = source.stat()
    os.utime(source, ns=(saved.st_atime_ns, saved.st_mtime_ns + 1_000_000))  # "edited"
    try:
        run, _ = warm.launch(instance, published)
        assert poll_for_finished_run(instance, run.run_id, timeout=120).is_success
    finally:
        os.utime(source, ns=(saved.st_atime_ns, saved.st_mtime_ns))
    assert worker_info(instance.get_run_by_id(run.run_id))["zygote"] != zygote
    warm.wait_for(lambda: not process_alive(zygote, None), 15, "the stale zygote's exit")


@slow
@transactional
def test_a_worker_that_cannot_start_fails_the_run_with_the_error(
    dagster_storage_url, worker_environment, published
):
    patch, context = warm.warm_instance(
        dagster_storage_url, worker_environment, preload_modules=["flowpilot_no_such_module"]
    )
    try:
        with context as dagster_instance:
            run, execution = warm.create_run(dagster_instance, published)
            with pytest.raises(Exception, match="could not start a worker"):
                dagster_instance.launch_run(run.run_id, workspace=None)
            assert dagster_instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
            errors = [m for m in warm.messages(dagster_instance, run.run_id) if "worker" in m]
            assert any("flowpilot_no_such_module" in m for m in errors), errors
    finally:
        patch.undo()


@slow
@transactional
def test_no_process_is_left_when_the_instance_stops(
    dagster_storage_url, worker_environment, org, user, echo_server
):
    workflow = make_published_workflow(org, user, warm.SLEEPY, slug="sleepy")
    patch, context = warm.warm_instance(dagster_storage_url, worker_environment)
    try:
        with context as dagster_instance:
            run, _ = warm.launch(dagster_instance, workflow, {"url": f"{echo_server.url}/sleep/30"})
            info = warm.worker_of(dagster_instance, run.run_id)
            warm.step_started(dagster_instance, run.run_id, "wait")
            [zygote] = dagster_instance.run_launcher.pool().zygote_pids()
            # Zygote and worker stay in this (the daemon's) process group.
            assert os.getpgid(zygote) == os.getpgid(info["pid"]) == os.getpgid(0)
        # The instance is disposed (what the daemon does when it stops).
        assert not process_alive(zygote, None)
        assert not process_alive(info["pid"], info["start"])
        with instance_for_test(overrides=storage_config(dagster_storage_url)) as reader:
            ended = reader.get_run_by_id(run.run_id)
        assert ended.status == DagsterRunStatus.FAILURE  # interrupted, not left "started"
    finally:
        patch.undo()
