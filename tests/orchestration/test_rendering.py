"""Rendering a published version into a Dagster job, and running it with execute_in_process."""

from __future__ import annotations

import pytest
from dagster import DagsterInstance

from control_plane.core.tenancy import tenant_context
from control_plane.executions.models import ExecutionStep, WorkflowExecution
from control_plane.workflows.selectors import workflow_latest_version, workflow_spec
from orchestration.rendering import build_job
from orchestration.repository import default_resources, make_repository
from orchestration.repository_data import workflow_data
from resources.control_plane import ControlPlaneResource
from tests.factories import THREE_STEPS, definition, make_published_workflow, run_workflow, steps_of

pytestmark = pytest.mark.django_db(transaction=False)


def _spec(workflow):
    with tenant_context(workflow.organization_id):
        return workflow_spec(version_id=workflow_latest_version(workflow=workflow).pk)


def _resources():
    return default_resources(ControlPlaneResource(settings_module="control_plane.settings.test"))


def test_three_steps_render_with_their_dependencies(published):
    job = build_job(_spec(published), _resources())
    assert job.name == "acme__triage"
    names = {node.name for node in job.graph.nodes}
    assert names == {"greet", "shout", "length"}
    structure = job.graph.dependency_structure
    upstream = {
        name: sorted(
            out.node_name
            for outs in structure.input_to_upstream_outputs_for_node(name).values()
            for out in outs
        )
        for name in names
    }
    assert upstream == {"greet": [], "shout": ["greet"], "length": ["greet"]}
    assert job.tags["flowpilot/org"] == "acme"
    assert job.tags["flowpilot/workflow"] == "triage"
    assert job.tags["flowpilot/version"] == "1"


def test_a_job_carries_only_the_resources_its_steps_use(published, org, user, echo_server):
    templates_only = build_job(_spec(published), _resources())
    raw = {
        "steps": [
            {"id": "get", "type": "http.request", "config": {"url": echo_server.url}},
            {"id": "say", "type": "transform.template", "config": {"template": "hi"}},
        ]
    }
    with_http = build_job(
        _spec(make_published_workflow(org, user, raw, slug="fetcher")), _resources()
    )

    def resources(job):
        return set(job.resource_defs) - {"io_manager"}  # Dagster's own default

    assert resources(templates_only) == {"control_plane"}
    assert resources(with_http) == {"control_plane", "http"}


def test_same_version_renders_identical_job(published):
    spec = _spec(published)
    first = build_job(spec, _resources()).get_job_snapshot()
    second = build_job(_spec(published), _resources()).get_job_snapshot()
    assert first.snapshot_id == second.snapshot_id


def test_different_version_renders_a_different_job(published, user):
    from control_plane.workflows import services

    before = build_job(_spec(published), _resources()).get_job_snapshot().snapshot_id
    with tenant_context(published.organization_id):
        services.workflow_update(
            workflow=published, draft_definition=definition(inputs={"name": {"type": "string"}})
        )
        services.workflow_publish(workflow=published, published_by=user)
    after = build_job(_spec(published), _resources())
    assert after.get_job_snapshot().snapshot_id != before
    assert after.tags["flowpilot/version"] == "2"


def test_execute_in_process_records_three_steps(published):
    execution = run_workflow(published, inputs={"name": "ada"})
    job = build_job(_spec(published), _resources())
    result = job.execute_in_process(
        run_config={"inputs": execution.inputs},
        tags={"flowpilot/execution": str(execution.pk)},
        instance=DagsterInstance.ephemeral(),
    )
    assert result.success
    execution.refresh_from_db()
    assert execution.dagster_run_id == result.run_id
    assert execution.trigger_event.status == "launched"
    steps = {s.step_id: s for s in steps_of(execution)}
    assert {k: s.status for k, s in steps.items()} == dict.fromkeys(
        ("greet", "shout", "length"), "success"
    )
    assert steps["shout"].output == {"result": "HI ADA"}
    assert steps["length"].output == {"result": 6}  # a lone expression keeps its type
    assert all(s.started_at and s.finished_at for s in steps.values())


def test_false_condition_skips_branch_and_failure_is_recorded(org, user, echo_server):
    raw = {
        "inputs": {"url": {"type": "string"}},
        "steps": [
            {
                "id": "gate",
                "type": "transform.template",
                "when": "inputs.url == 'never'",
                "config": {"template": "x"},
            },
            {
                "id": "after_gate",
                "type": "transform.template",
                "after": ["gate"],
                "config": {"template": "y"},
            },
            {"id": "fetch", "type": "http.request", "config": {"url": "{{ inputs.url }}"}},
        ],
    }
    workflow = make_published_workflow(org, user, raw, slug="branches")
    execution = run_workflow(workflow, inputs={"url": f"{echo_server.url}/status/503"})
    job = build_job(_spec(workflow), _resources())
    result = job.execute_in_process(
        run_config={"inputs": execution.inputs},
        tags={"flowpilot/execution": str(execution.pk)},
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    ControlPlaneResource().execution_finished(
        run_id=result.run_id,
        run_status="FAILURE",
        error="fetch failed",
        tags=result.dagster_run.tags,
    )
    execution.refresh_from_db()
    steps = {s.step_id: s for s in steps_of(execution)}
    assert execution.status == WorkflowExecution.Status.FAILURE
    assert steps["gate"].status == ExecutionStep.Status.SKIPPED
    assert steps["after_gate"].status == ExecutionStep.Status.SKIPPED
    assert steps["fetch"].status == ExecutionStep.Status.FAILURE
    assert "answered 503" in steps["fetch"].error


def test_http_request_step_calls_the_server(org, user, echo_server):
    raw = {
        "steps": [
            {
                "id": "post",
                "type": "http.request",
                "config": {
                    "url": f"{echo_server.url}/hook",
                    "method": "POST",
                    "json_body": {"a": 1},
                },
            }
        ]
    }
    workflow = make_published_workflow(org, user, raw, slug="poster")
    execution = run_workflow(workflow)
    result = build_job(_spec(workflow), _resources()).execute_in_process(
        run_config={"inputs": {}},
        tags={"flowpilot/execution": str(execution.pk)},
        instance=DagsterInstance.ephemeral(),
    )
    assert result.success
    step = steps_of(execution).get()
    assert step.output["status_code"] == 200
    assert step.output["body"]["echo"] == {"a": 1}
    assert step.output["body"]["method"] == "POST"


def test_run_started_from_dagster_ui_gets_an_execution(published):
    """A run launched in Dagster (no flowpilot/execution tag) is mirrored as an execution."""
    job = build_job(_spec(published), _resources())
    result = job.execute_in_process(
        run_config={"inputs": {"name": "ui"}}, instance=DagsterInstance.ephemeral()
    )
    assert result.success
    execution = WorkflowExecution.objects.unscoped().get(dagster_run_id=result.run_id)
    assert execution.workflow == published and execution.inputs == {"name": "ui"}
    assert steps_of(execution).count() == 3


def test_repository_builds_jobs_lazily(org, user):
    for slug in ("one", "two", "three"):
        make_published_workflow(org, user, THREE_STEPS, slug=slug)
    repo = make_repository(ControlPlaneResource())
    assert set(repo.job_names) >= {"acme__one", "acme__two", "acme__three"}
    assert workflow_data(repo).built_workflow_jobs() == []
    job = repo.get_job("acme__two")
    assert job.name == "acme__two"
    assert workflow_data(repo).built_workflow_jobs() == ["acme__two"]


def test_whole_code_location_loads_and_resolves_every_job(org, user):
    for slug in ("one", "two"):
        make_published_workflow(org, user, THREE_STEPS, slug=slug)
    repo = make_repository(ControlPlaneResource())
    jobs = {job.name for job in repo.get_all_jobs()}
    assert {"acme__one", "acme__two", "identity_cleanup"} <= jobs
    assert [s.name for s in repo.schedule_defs] == ["identity_cleanup_hourly"]
    sensors = {s.name for s in repo.sensor_defs}
    assert {
        "trigger_event_sensor",
        "execution_success_sensor",
        "execution_failure_sensor",
    } <= sensors
    trigger = repo.get_sensor_def("trigger_event_sensor")
    assert {t.job_name for t in trigger.targets} >= {"acme__one", "acme__two"}


def test_code_location_module_loads(published):
    import importlib

    import orchestration.definitions as module

    module = importlib.reload(module)
    assert "acme__triage" in module.defs.job_names


def _run(org, user, raw, slug, inputs=None):
    workflow = make_published_workflow(org, user, raw, slug=slug)
    execution = run_workflow(workflow, inputs=inputs or {})
    result = build_job(_spec(workflow), _resources()).execute_in_process(
        run_config={"inputs": execution.inputs},
        tags={"flowpilot/execution": str(execution.pk)},
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    return result, execution


def test_retry_policy_retries_then_succeeds(org, user, echo_server):
    raw = {
        "steps": [
            {
                "id": "flaky",
                "type": "http.request",
                "retry": {"max_attempts": 3, "backoff_seconds": 0},
                "config": {"url": f"{echo_server.url}/flaky/k1/2"},
            }
        ]
    }
    result, execution = _run(org, user, raw, "flaky")
    assert result.success
    step = steps_of(execution).get()
    assert step.status == "success" and step.attempts == 3
    assert step.output["status_code"] == 200


def test_step_timeout_fails_the_step(org, user, echo_server):
    raw = {
        "steps": [
            {
                "id": "slow",
                "type": "http.request",
                "timeout_seconds": 0.3,
                "config": {"url": f"{echo_server.url}/sleep/2"},
            }
        ]
    }
    result, execution = _run(org, user, raw, "slow")
    assert not result.success
    step = steps_of(execution).get()
    assert step.status == "failure" and step.error == "timed out after 0.3s"


def test_oversized_output_fails_clearly(org, user):
    raw = {
        "inputs": {"n": {"type": "integer"}},
        "steps": [
            {
                "id": "big",
                "type": "transform.template",
                "config": {"template": "{{ 'x' * inputs.n }}"},
            }
        ],
    }
    result, execution = _run(org, user, raw, "big", inputs={"n": 300_000})
    assert not result.success
    assert "over the 262144-byte limit" in steps_of(execution).get().error


def test_ops_set_the_organization_context_from_the_run(published, other_org, as_app_role):
    """As the application role, row-level security hides every row unless the op, the resource
    and the run-status hook set the organization from the run's flowpilot/org tag."""
    execution = run_workflow(published, inputs={"name": "rls"})
    spec = _spec(published)
    result = build_job(spec, _resources()).execute_in_process(
        run_config={"inputs": execution.inputs},
        tags={"flowpilot/execution": str(execution.pk)},
        instance=DagsterInstance.ephemeral(),
    )
    assert result.success
    ControlPlaneResource().execution_finished(
        run_id=result.run_id, run_status="SUCCESS", tags=result.dagster_run.tags
    )
    with tenant_context(published.organization_id):
        execution.refresh_from_db()
        assert execution.status == "success" and execution.dagster_run_id == result.run_id
        assert [s.status for s in execution.steps.order_by("position")] == ["success"] * 3
    with tenant_context(other_org.pk):
        assert not WorkflowExecution.objects.filter(pk=execution.pk).exists()
        assert not ExecutionStep.objects.unscoped().filter(execution_id=execution.pk).exists()
