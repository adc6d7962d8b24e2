"""FlowPilot's code server (orchestration/code_server.py) as Dagster reaches it: a real
`python -m orchestration.code_server` process over the test database, loaded and reloaded
through Dagster's own GrpcServerCodeLocationOrigin (what the webserver and the daemon do for a
`grpc_server` workspace entry). A reload happens in place: same process, new jobs visible,
paused workflows gone, unchanged jobs keep their snapshots."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin
from dagster._core.test_utils import instance_for_test
from dagster._grpc.client import DagsterGrpcClient

from control_plane.core.tenancy import tenant_context
from control_plane.workflows.models import Workflow, WorkflowVersion
from control_plane.workflows.services import workflow_update
from tests.e2e.support import free_port
from tests.factories import THREE_STEPS, make_published_workflow
from tests.orchestration import warm_support as warm

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def start_code_server(environment: dict, log) -> tuple[int, subprocess.Popen]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestration.code_server", "--port", str(port)],
        cwd=warm.ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    client = DagsterGrpcClient(port=port, host="localhost")
    deadline = time.monotonic() + 120
    while True:
        try:
            client.ping("up")
            return port, process
        except Exception as exc:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"code server did not start: {log.read_text()}") from exc
            time.sleep(0.2)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def environment(worker_environment, tmp_path) -> dict:
    snapshots = tmp_path / "snapshots"
    return {**os.environ, **worker_environment, "FLOWPILOT_SNAPSHOT_CACHE": str(snapshots)}


@pytest.fixture
def code_server(environment, published, tmp_path):
    """The server for location `flowpilot`, started after acme's first workflow exists."""
    log = tmp_path / "code_server.log"
    port, process = start_code_server(environment, log)
    try:
        yield port, process, log
    finally:
        stop(process)


def _jobs(location) -> dict[str, str]:
    """{job name: snapshot id} of the location's repository."""
    [repository] = location.get_repositories().values()
    return {job.name: job.identifying_job_snapshot_id for job in repository.get_all_jobs()}


def test_a_reload_happens_in_place(code_server, org, user, published):
    port, process, _log = code_server
    origin = GrpcServerCodeLocationOrigin(host="localhost", port=port, location_name="flowpilot")
    with instance_for_test() as instance:
        with origin.create_location(instance) as location:
            before = _jobs(location)
            server_id = location.client.get_server_id()
        assert "acme__triage" in before

        later = make_published_workflow(org, user, THREE_STEPS, slug="later")
        with tenant_context(org.pk):
            workflow_update(
                workflow=Workflow.objects.get(pk=published.pk), status=Workflow.Status.PAUSED
            )
        started = time.monotonic()
        with origin.reload_location(instance) as location:
            after = _jobs(location)
            reloaded_in = time.monotonic() - started
            assert location.client.get_server_id() != server_id  # clients see the change
        assert process.poll() is None  # the same process: nothing was restarted

    assert f"acme__{later.slug}" in after  # the new workflow's job is there
    assert "acme__triage" not in after  # the paused one's is gone
    # Jobs of unchanged versions are the same jobs (the maintenance job here).
    assert after["identity_cleanup"] == before["identity_cleanup"]
    assert reloaded_in < 30, reloaded_in


def test_a_failed_rebuild_keeps_the_previous_definitions(code_server, org, user, published):
    port, process, log = code_server
    origin = GrpcServerCodeLocationOrigin(host="localhost", port=port, location_name="flowpilot")
    with instance_for_test() as instance:
        with origin.create_location(instance) as location:
            before = _jobs(location)
        # A newer version written behind the services' back (published versions are immutable
        # rows, so a new one) whose definition does not parse: its job cannot render.
        version = WorkflowVersion.objects.unscoped().get(workflow=published)
        version.pk, version.number = None, version.number + 1
        version.definition = {"steps": "not a list"}
        version.save()
        with origin.reload_location(instance) as location:
            assert _jobs(location) == before
        assert process.poll() is None
    assert "reloading defs in place failed; kept the previous definitions" in log.read_text()


def test_a_restarted_server_answers_from_kept_snapshots(
    environment, org, user, published, tmp_path
):
    make_published_workflow(org, user, THREE_STEPS, slug="later")
    snapshots = Path(environment["FLOWPILOT_SNAPSHOT_CACHE"]) / "flowpilot"
    jobs = []
    for attempt in ("cold", "warm"):
        log = tmp_path / f"{attempt}.log"
        port, process = start_code_server(environment, log)
        try:
            origin = GrpcServerCodeLocationOrigin(
                host="localhost", port=port, location_name="flowpilot"
            )
            with instance_for_test() as instance, origin.create_location(instance) as location:
                jobs.append(_jobs(location))
        finally:
            stop(process)
        if attempt == "cold":
            kept = {path: path.stat().st_mtime_ns for path in snapshots.glob("*/*.snap")}

    assert jobs[0] == jobs[1] and {"acme__triage", "acme__later"} <= set(jobs[1])
    assert "2 job snapshots kept, 0 rendered" in (tmp_path / "warm.log").read_text()
    assert "0 job snapshots kept, 2 rendered" in (tmp_path / "cold.log").read_text()
    assert len(kept) == 2  # the warm start rewrote nothing
    assert {path: path.stat().st_mtime_ns for path in snapshots.glob("*/*.snap")} == kept


def test_warming_before_the_start_leaves_nothing_to_render(
    environment, org, user, published, tmp_path
):
    """`python -m orchestration.code_server --warm` (docker-compose's migrate step runs it, so a
    code server started after an upgrade loads warm) keeps every job's snapshot."""
    make_published_workflow(org, user, THREE_STEPS, slug="later")
    warmed = subprocess.run(
        [sys.executable, "-m", "orchestration.code_server", "--warm"],
        cwd=warm.ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert warmed.returncode == 0, warmed.stderr
    assert "flowpilot: 2 jobs, 2 snapshots rendered and kept" in warmed.stderr
    log = tmp_path / "server.log"
    port, process = start_code_server(environment, log)
    try:
        origin = GrpcServerCodeLocationOrigin(
            host="localhost", port=port, location_name="flowpilot"
        )
        with instance_for_test() as instance, origin.create_location(instance) as location:
            assert {"acme__triage", "acme__later"} <= set(_jobs(location))
    finally:
        stop(process)
    assert "2 job snapshots kept, 0 rendered" in log.read_text()
