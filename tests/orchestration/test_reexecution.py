"""Re-executions as Dagster runs them, in process with `execute_job` and `ReexecutionOptions`:
the run records into its own execution linked to the parent, steps reused from the parent are
recorded with the parent's output (not as skipped), and the run-status sensor closes it."""

from __future__ import annotations

import threading
import time

import pytest
from dagster import ReexecutionOptions, instance_for_test
from django.db import connection

from control_plane.core.tenancy import tenant_context
from control_plane.executions.models import (
    ExecutionLog,
    ExecutionStep,
    TriggerEvent,
    WorkflowExecution,
)
from control_plane.executions.services import execution_launch_lock, execution_start_for_run
from control_plane.workflows.selectors import workflow_latest_version
from tests.factories import make_published_workflow, run_workflow, steps_of
from tests.orchestration.reexecution_support import finish_through_sensor, run

pytestmark = pytest.mark.django_db

FLAKY = {
    "inputs": {"url": {"type": "string"}},
    "steps": [
        {"id": "compose", "type": "transform.template", "config": {"template": "Hi"}},
        {
            "id": "send",
            "type": "http.request",
            "after": ["compose"],
            "config": {"url": "{{ inputs.url }}", "json_body": "{{ steps.compose.output }}"},
        },
        {
            "id": "report",
            "type": "transform.template",
            "after": ["send"],
            "config": {"template": "{{ steps.send.output.status_code }}"},
        },
    ],
}


@pytest.fixture
def instance():
    with instance_for_test() as instance:
        yield instance


@pytest.fixture
def flaky(org, user):
    return make_published_workflow(org, user, FLAKY, slug="flaky")


def _version_id(workflow) -> int:
    with tenant_context(workflow.organization_id):
        return workflow_latest_version(workflow=workflow).pk


def _failed_parent(workflow, instance, echo_server):
    """An execution whose `send` step failed (the server answers 503 once, then 200)."""
    parent = run_workflow(workflow, inputs={"url": f"{echo_server.url}/flaky/send/1"})
    result = run(
        workflow,
        instance,
        run_config={"inputs": parent.inputs},
        tags={"flowpilot/execution": str(parent.pk)},
    )
    assert not result.success
    finish_through_sensor(result, instance)
    with tenant_context(workflow.organization_id):
        parent.refresh_from_db()
    assert parent.status == "failure" and parent.dagster_run_id == result.run_id
    return parent, result


def _lines(execution) -> list[str]:
    with tenant_context(execution.organization_id):  # as a tenant: works under the app role
        return list(
            ExecutionLog.objects.filter(execution=execution)
            .order_by("id")
            .values_list("message", flat=True)
        )


def _steps(execution) -> dict:
    with tenant_context(execution.organization_id):
        return {step.step_id: step for step in ExecutionStep.objects.filter(execution=execution)}


def test_rerun_from_failure_reuses_what_succeeded_and_closes(
    flaky, instance, echo_server, as_app_role
):
    """As the application role: row-level security applies to every write of both runs."""
    parent, first = _failed_parent(flaky, instance, echo_server)
    # The control plane's re-run (control.execution_rerun) commits this before the run starts.
    with tenant_context(flaky.organization_id):
        rerun = WorkflowExecution.objects.create(
            organization_id=flaky.organization_id,
            workflow=flaky,
            version=parent.version,
            inputs=parent.inputs,
            rerun_of=parent,
            rerun_strategy="from_failure",
        )
        event = TriggerEvent.objects.create(
            organization_id=flaky.organization_id,
            workflow=flaky,
            version=parent.version,
            execution=rerun,
            kind=TriggerEvent.Kind.RERUN,
            status=TriggerEvent.Status.LAUNCHED,
        )
    second = run(
        flaky,
        instance,
        tags={"flowpilot/execution": str(rerun.pk), "flowpilot/event": str(event.pk)},
        reexecution_options=ReexecutionOptions.from_failure(first.run_id, instance),
    )
    assert second.success
    finish_through_sensor(second, instance)

    with tenant_context(flaky.organization_id):
        rerun.refresh_from_db()
        assert WorkflowExecution.objects.filter(workflow=flaky).count() == 2
    assert rerun.status == "success" and rerun.dagster_run_id == second.run_id
    parent_steps = _steps(parent)
    steps = _steps(rerun)
    assert {k: s.status for k, s in steps.items()} == dict.fromkeys(
        ("compose", "send", "report"), "success"
    )
    # compose was not run again: taken over from the parent, output and all.
    assert steps["compose"].attempts == 0
    assert steps["compose"].output == parent_steps["compose"].output == {"result": "Hi"}
    assert steps["send"].attempts == 1 and steps["report"].output == {"result": 200}
    assert echo_server.calls["send"] == 2  # once failing in the parent, once here
    lines = _lines(rerun)
    assert lines[:3] == [
        f"run started (Dagster run {second.run_id})",
        f"re-run of execution {parent.pk} (from_failure, re-executing Dagster run {first.run_id})",
        f"step 'compose' reused from execution {parent.pk} (its output taken over), not run again",
    ]
    assert lines[3:] == [
        "step 'send' started",
        "step 'send' succeeded",
        "step 'report' started",
        "step 'report' succeeded",
        "run succeeded",
    ]
    # The parent is left as it ended.
    with tenant_context(flaky.organization_id):
        parent.refresh_from_db()
    assert parent.status == "failure" and parent.dagster_run_id == first.run_id


def _as_dagster_ui(parent_run, strategy_tags: dict) -> dict:
    """The tags a re-execution launched from the Dagster UI gets: the parent's (its FlowPilot
    execution and event included) and Dagster's own re-execution tags."""
    return {
        **parent_run.tags,
        "dagster/parent_run_id": parent_run.run_id,
        "dagster/root_run_id": parent_run.run_id,
        **strategy_tags,
    }


def test_a_dagster_ui_rerun_from_failure_becomes_a_linked_execution(flaky, instance, echo_server):
    parent, first = _failed_parent(flaky, instance, echo_server)
    second = run(
        flaky,
        instance,
        tags=_as_dagster_ui(first.dagster_run, {"dagster/is_resume_retry": "true"}),
        reexecution_options=ReexecutionOptions.from_failure(first.run_id, instance),
    )
    assert second.success
    finish_through_sensor(second, instance)
    rerun = WorkflowExecution.objects.unscoped().get(dagster_run_id=second.run_id)
    assert rerun.pk != parent.pk
    assert (rerun.rerun_of_id, rerun.rerun_strategy, rerun.status) == (
        parent.pk,
        "from_failure",
        "success",
    )
    assert rerun.inputs == parent.inputs and rerun.version_id == parent.version_id
    steps = {s.step_id: s for s in steps_of(rerun)}
    assert [steps[k].status for k in ("compose", "send", "report")] == ["success"] * 3
    assert steps["compose"].attempts == 0
    parent.refresh_from_db()
    assert parent.status == "failure" and parent.dagster_run_id == first.run_id


def test_a_dagster_ui_rerun_of_all_steps_runs_every_step(flaky, instance, echo_server):
    parent, first = _failed_parent(flaky, instance, echo_server)
    second = run(
        flaky,
        instance,
        tags=_as_dagster_ui(first.dagster_run, {}),
        reexecution_options=ReexecutionOptions(parent_run_id=first.run_id),
    )
    assert second.success
    finish_through_sensor(second, instance)
    rerun = WorkflowExecution.objects.unscoped().get(dagster_run_id=second.run_id)
    assert (rerun.rerun_of_id, rerun.rerun_strategy, rerun.status) == (parent.pk, "all", "success")
    assert {s.step_id: s.attempts for s in steps_of(rerun)} == dict.fromkeys(
        ("compose", "send", "report"), 1
    )
    assert not any("reused" in line for line in _lines(rerun))


@pytest.mark.django_db(transaction=True)
def test_a_rerun_run_waits_for_its_execution_to_commit(org, user):
    """The control plane launches a re-run before its execution commits, holding the launch
    lock. The run's first op, however early, must claim that execution, not make another."""
    workflow = make_published_workflow(org, user, FLAKY, slug="flaky")
    version = _version_id(workflow)
    tags = {
        "flowpilot/org": org.slug,
        "flowpilot/workflow": workflow.slug,
        "flowpilot/version": "1",
        "dagster/parent_run_id": "parent-run",
    }
    locked, release = threading.Event(), threading.Event()
    created: dict[str, int] = {}
    claimed: dict[str, object] = {}

    def control_plane() -> None:
        try:
            with tenant_context(org.pk):
                execution = WorkflowExecution.objects.create(
                    organization=org, workflow=workflow, version_id=version, inputs={}
                )
                execution_launch_lock(execution_id=execution.pk)
                created["id"] = execution.pk
                locked.set()
                release.wait(10)  # ... Dagster is launching the run ...
        finally:
            connection.close()

    def first_op() -> None:
        try:
            with tenant_context(org.pk):
                claimed["id"] = execution_start_for_run(
                    run_id="the-run",
                    tags={**tags, "flowpilot/execution": str(created["id"])},
                    inputs={},
                )
            claimed["at"] = time.monotonic()
        finally:
            connection.close()

    launcher = threading.Thread(target=control_plane)
    launcher.start()
    assert locked.wait(10)
    op = threading.Thread(target=first_op)
    op.start()
    time.sleep(0.5)
    assert "id" not in claimed  # waiting for the commit
    committed_at = time.monotonic()
    release.set()
    launcher.join(10)
    op.join(10)
    assert claimed["id"] == created["id"] and claimed["at"] >= committed_at
    executions = WorkflowExecution.objects.unscoped().filter(workflow=workflow)
    assert [(e.pk, e.dagster_run_id, e.status) for e in executions] == [
        (created["id"], "the-run", "running")
    ]
