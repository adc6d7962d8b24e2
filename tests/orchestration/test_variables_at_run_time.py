"""Variables at run time: resolved by the op, workflow over organization, secrets never in
Dagster's run config, events or logs, and redacted from failures."""

from __future__ import annotations

import pytest
from dagster import DagsterInstance, serialize_value

from control_plane.core.tenancy import tenant_context
from control_plane.executions.models import ExecutionStep
from control_plane.workflows import variables as variable_services
from control_plane.workflows.selectors import workflow_latest_version, workflow_spec
from orchestration.rendering import build_job
from orchestration.repository import default_resources
from resources.control_plane import ControlPlaneResource
from tests.factories import make_published_workflow, run_workflow, steps_of
from tests.variable_support import SECRET, make_variable, template_definition

pytestmark = pytest.mark.django_db


# Runs --------------------------------------------------------------------------------------


def _resources():
    return default_resources(ControlPlaneResource(settings_module="control_plane.settings.test"))


def _execute(workflow, inputs=None):
    with tenant_context(workflow.organization_id):
        spec = workflow_spec(version_id=workflow_latest_version(workflow=workflow).pk)
    execution = run_workflow(workflow, inputs=inputs or {})
    instance = DagsterInstance.ephemeral()
    result = build_job(spec, _resources()).execute_in_process(
        run_config={"inputs": execution.inputs},
        tags={"flowpilot/execution": str(execution.pk)},
        instance=instance,
        raise_on_error=False,
    )
    return result, execution, instance


def test_workflow_variable_overrides_organization_variable_in_a_run(org, user, as_app_role):
    make_variable(org, "greeting", "org hello")
    make_variable(org, "attempts", 3, type="integer")
    template = "{{ vars.greeting }} x{{ vars.attempts }}"
    own = make_published_workflow(org, user, template_definition(template), slug="own")
    shared = make_published_workflow(org, user, template_definition(template), slug="shared")
    make_variable(org, "greeting", "own hello", workflow=own)

    for workflow, expected in ((own, "own hello x3"), (shared, "org hello x3")):
        result, execution, _ = _execute(workflow)
        assert result.success
        with tenant_context(org.pk):
            assert ExecutionStep.objects.get(execution=execution).output == {"result": expected}

    with tenant_context(org.pk):
        values = variable_services.variables_for_run(org.pk, own.pk)
    assert values == {"greeting": "own hello", "attempts": 3}


def test_a_run_reads_variables_once_and_uses_them_in_conditions(org, user, as_app_role):
    make_variable(org, "enabled", False, type="boolean")
    make_variable(org, "limits", {"max": 2}, type="json")
    raw = {
        "steps": [
            {
                "id": "gated",
                "type": "transform.template",
                "when": "vars.enabled",
                "config": {"template": "on"},
            },
            {
                "id": "native",
                "type": "transform.template",
                "config": {"template": "{{ vars.limits['max'] * 10 }}"},
            },
            {"id": "plain", "type": "transform.template", "config": {"template": "no vars"}},
        ]
    }
    workflow = make_published_workflow(org, user, raw, slug="gates")
    calls = []
    original = ControlPlaneResource.variables_for_run

    def counting(self, **kwargs):
        calls.append(kwargs["run_id"])
        return original(self, **kwargs)

    ControlPlaneResource.variables_for_run = counting
    try:
        result, execution, _ = _execute(workflow)
    finally:
        ControlPlaneResource.variables_for_run = original
    assert result.success
    with tenant_context(org.pk):
        steps = {s.step_id: s for s in steps_of(execution)}
    assert steps["gated"].status == "skipped"
    assert steps["native"].output == {"result": 20}
    assert steps["plain"].status == "success"
    assert len(calls) == 2 and set(calls) == {result.run_id}  # two steps read vars; cached


def test_deleted_variable_fails_the_step_clearly(org, user):
    variable = make_variable(org, "greeting", "hi")
    workflow = make_published_workflow(org, user, template_definition("{{ vars.greeting }}"))
    with tenant_context(org.pk):
        variable_services.variable_delete(variable=variable)
    result, execution, _ = _execute(workflow)
    assert not result.success
    assert "unknown variable 'greeting'" in steps_of(execution).get().error


def _dagster_record(result, instance) -> str:
    """Everything Dagster stored about the run: its config, tags and every event."""
    run = instance.get_run_by_id(result.run_id)
    return "\n".join(
        [
            serialize_value(run),
            repr(run.run_config),
            repr(run.tags),
            *(serialize_value(entry) for entry in instance.all_logs(result.run_id)),
        ]
    )


def test_secret_reaches_the_server_but_never_dagster(org, user, echo_server, as_app_role):
    make_variable(org, "api_key", SECRET, is_secret=True)
    raw = {
        "steps": [
            {
                "id": "call",
                "type": "http.request",
                "config": {
                    "url": f"{echo_server.url}/hook",
                    "headers": {"X-Api-Key": "{{ vars.api_key }}"},
                },
            }
        ]
    }
    workflow = make_published_workflow(org, user, raw, slug="caller")
    result, execution, instance = _execute(workflow)
    assert result.success
    with tenant_context(org.pk):
        step = steps_of(execution).get()
    received = {k.lower(): v for k, v in step.output["body"]["headers"].items()}
    assert received["x-api-key"] == SECRET  # the server got it (the output is the user's)

    record = _dagster_record(result, instance)
    assert len(instance.all_logs(result.run_id)) > 5
    assert SECRET not in record
    assert SECRET not in repr(result.dagster_run)


@pytest.mark.parametrize(
    ("url_path", "extra"),
    [
        # The error quotes the URL and the start of the echoed request (its path).
        ("/status/{{ vars.api_key }}/500", {}),
        # ... cut at 200 characters, here inside the secret.
        ("/status/" + "x" * 155 + "{{ vars.api_key }}/500", {}),
        # A config type error quotes the rendered value.
        ("/hook", {"timeout_seconds": "{{ vars.api_key }}"}),
    ],
    ids=["http-error", "cut-inside-the-secret", "config-error"],
)
def test_failure_messages_are_redacted(org, user, echo_server, url_path, extra):
    make_variable(org, "api_key", SECRET, is_secret=True)
    raw = {
        "steps": [
            {
                "id": "call",
                "type": "http.request",
                "config": {
                    "url": echo_server.url + url_path,
                    "headers": {"X-Api-Key": "{{ vars.api_key }}"},
                    **extra,
                },
            }
        ]
    }
    workflow = make_published_workflow(org, user, raw, slug="failing")
    result, execution, instance = _execute(workflow)
    assert not result.success
    error = steps_of(execution).get().error
    assert "***" in error and SECRET[:4] not in error
    assert SECRET not in _dagster_record(result, instance)


def test_variables_never_travel_in_run_config(org, user):
    """A run's config is just its inputs: variables are read by the op when it runs."""
    make_variable(org, "greeting", "hi")
    workflow = make_published_workflow(org, user, template_definition("{{ vars.greeting }}"))
    result, _, _ = _execute(workflow)
    assert result.success and result.dagster_run.run_config == {"inputs": {}}


def test_what_steps_log_is_redacted():
    from orchestration.ops import _RedactingLog
    from orchestration.steps import templating

    lines = []

    class Log:
        def info(self, message, **kwargs):
            lines.append(message)

        name = "log"

    log = _RedactingLog(Log(), templating.Variables({"k": SECRET}, secret={"k"}))
    log.info("calling with %s", SECRET)
    log.info(f"header {SECRET[:12]}")  # cut inside the secret, at the end
    assert lines == ["calling with ***", "header ***"] and log.name == "log"
