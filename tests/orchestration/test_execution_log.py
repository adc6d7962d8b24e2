"""The execution log written from the Dagster side: the run starting and ending, each step
starting, succeeding, failing (redacted as in Dagster's log), skipped by its condition, retried,
and what step types log through their runtime logger."""

from __future__ import annotations

import pytest
from dagster import DagsterEventType, instance_for_test
from django.db import connection
from django.test.utils import CaptureQueriesContext

from control_plane.core.tenancy import tenant_context
from control_plane.executions.models import ExecutionLog, ExecutionStep
from orchestration.ops import StepLogLines, _RedactingLog
from orchestration.steps import templating
from resources.control_plane import ControlPlaneResource
from tests.factories import make_published_workflow, run_workflow, steps_of
from tests.orchestration.reexecution_support import SETTINGS, finish_through_sensor, run
from tests.variable_support import SECRET, make_variable

pytestmark = pytest.mark.django_db


@pytest.fixture
def instance():
    with instance_for_test() as instance:
        yield instance


def _execute(workflow, instance, inputs=None):
    """Start the workflow as the API does, run its job, close it through the sensor."""
    execution = run_workflow(workflow, inputs=inputs or {})
    result = run(
        workflow,
        instance,
        run_config={"inputs": execution.inputs},
        tags={"flowpilot/execution": str(execution.pk)},
    )
    finish_through_sensor(result, instance)
    with tenant_context(workflow.organization_id):
        execution.refresh_from_db()
    return result, execution


def _log(execution) -> list[tuple[str, str, str]]:
    with tenant_context(execution.organization_id):  # as a tenant: works under the app role
        rows = ExecutionLog.objects.filter(execution=execution).order_by("id")
        return [(row.step_id, row.level, row.message) for row in rows]


def test_a_successful_run_logs_each_step_and_its_ends(published, instance, as_app_role):
    """As the application role: row-level security applies to every write of the run."""
    result, execution = _execute(published, instance, {"name": "ada"})
    assert result.success and execution.status == "success"
    log = _log(execution)
    assert log[0] == ("", "info", f"run started (Dagster run {result.run_id})")
    assert log[-1] == ("", "info", "run succeeded")
    for step in ("greet", "shout", "length"):  # shout and length run in either order
        assert [line for line in log if line[0] == step] == [
            (step, "info", f"step '{step}' started"),
            (step, "info", f"step '{step}' succeeded"),
        ]
    assert len(log) == 8
    with tenant_context(published.organization_id):
        rows = ExecutionLog.objects.filter(execution=execution)
        assert {row.organization_id for row in rows} == {published.organization_id}


def test_skipped_failed_and_not_run_steps_are_logged(org, user, instance, echo_server):
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
    url = f"{echo_server.url}/status/503"
    result, execution = _execute(workflow, instance, {"url": url})
    assert execution.status == "failure"
    log = _log(execution)
    assert (
        "gate",
        "info",
        "step 'gate' skipped: condition \"inputs.url == 'never'\" is false",
    ) in log
    assert ("after_gate", "info", "step 'after_gate' did not run") in log
    failed = [line for line in log if line[0] == "fetch" and line[1] == "error"]
    assert len(failed) == 1 and failed[0][2].startswith(
        f"step 'fetch' failed: GET {url} answered 503"
    )
    assert log[-1] == ("", "error", f"run failed: {execution.error}")
    assert execution.error.startswith("fetch: ")


def test_a_retried_step_logs_each_attempt(org, user, instance, echo_server):
    raw = {
        "inputs": {"url": {"type": "string"}},
        "steps": [
            {
                "id": "call",
                "type": "http.request",
                "retry": {"max_attempts": 3, "backoff_seconds": 0},
                "config": {"url": "{{ inputs.url }}"},
            }
        ],
    }
    workflow = make_published_workflow(org, user, raw, slug="retried")
    _, execution = _execute(workflow, instance, {"url": f"{echo_server.url}/flaky/call/2"})
    assert execution.status == "success"
    assert steps_of(execution).get().attempts == 3
    step_lines = [
        (level, message.split(":")[0]) for step, level, message in _log(execution) if step
    ]
    assert step_lines == [
        ("info", "step 'call' started"),
        ("error", "step 'call' failed"),
        ("warning", "step 'call' retried (attempt 2)"),
        ("error", "step 'call' failed"),
        ("warning", "step 'call' retried (attempt 3)"),
        ("info", "step 'call' succeeded"),
    ]


def test_a_failure_is_logged_redacted_exactly_as_in_dagster(org, user, instance, echo_server):
    make_variable(org, "api_key", SECRET, is_secret=True)
    raw = {
        "steps": [
            {
                "id": "call",
                "type": "http.request",
                "config": {"url": echo_server.url + "/status/{{ vars.api_key }}/500"},
            }
        ]
    }
    workflow = make_published_workflow(org, user, raw, slug="failing")
    result, execution = _execute(workflow, instance)
    (failure,) = instance.get_records_for_run(
        result.run_id, of_type=DagsterEventType.STEP_FAILURE
    ).records
    in_dagster = failure.event_log_entry.dagster_event.step_failure_data.user_failure_data
    lines = [message for step, level, message in _log(execution) if level == "error" and step]
    assert lines == [in_dagster.description]
    assert "***" in lines[0] and SECRET[:4] not in lines[0]
    everything = "\n".join(message for _, _, message in _log(execution))
    assert SECRET[:4] not in everything and SECRET[:4] not in execution.error


def test_what_a_step_logs_is_in_the_execution_log(org, user, instance, mailoutbox):
    raw = {
        "steps": [
            {
                "id": "mail",
                "type": "email.send",
                "config": {"to": "ada@acme.test", "subject": "s", "body": "b"},
            }
        ]
    }
    workflow = make_published_workflow(org, user, raw, slug="mailer")
    result, execution = _execute(workflow, instance)
    assert result.success
    message_id = steps_of(execution).get().output["message_id"]
    line = f"email {message_id} sent to 1 recipient(s)"
    assert _log(execution)[1:4] == [
        ("mail", "info", "step 'mail' started"),
        ("mail", "info", line),
        ("mail", "info", "step 'mail' succeeded"),
    ]
    in_dagster = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert line in in_dagster


def test_the_step_logger_redacts_once_for_both_logs():
    dagster_lines: list[tuple[str, str]] = []

    class DagsterLog:
        name = "dagster"

        def info(self, message, **kwargs):
            dagster_lines.append(("info", message))

        def warning(self, message, **kwargs):
            dagster_lines.append(("warning", message))

    kept = StepLogLines()
    log = _RedactingLog(DagsterLog(), templating.Variables({"k": SECRET}, secret={"k"}), kept)
    log.info("calling with %s", SECRET)
    log.warning(f"header {SECRET[:12]}")  # cut inside the secret, at the end
    assert dagster_lines == [("info", "calling with ***"), ("warning", "header ***")]
    assert [(line["level"], line["message"]) for line in kept.drain()] == dagster_lines
    assert kept.drain() == [] and log.name == "dagster"


def test_a_chatty_step_is_written_in_batches():
    flushed: list[int] = []
    kept = StepLogLines(lambda lines: flushed.append(len(lines)))
    for number in range(450):
        kept.add("info", f"line {number}")
    assert flushed == [200, 200] and len(kept.drain()) == 50


def test_a_canceled_run_logs_the_step_it_cut_off(published):
    execution = run_workflow(published)
    control_plane = ControlPlaneResource(settings_module=SETTINGS)
    tags = {"flowpilot/org": "acme", "flowpilot/execution": str(execution.pk)}
    control_plane.execution_claim(run_id="r-cancel", tags=tags, inputs={})
    record = {
        "organization_id": published.organization_id,
        "execution_id": execution.pk,
        "step_id": "greet",
        "step_type": "transform.template",
        "position": 0,
    }
    control_plane.step_started(**record, attempt=1)
    control_plane.execution_finished(
        run_id="r-cancel", run_status="CANCELED", error="canceled", tags=tags
    )
    log = _log(execution)
    assert (
        "greet",
        "error",
        "step 'greet' failed: run ended (canceled) while the step was running",
    ) in log
    assert log[-1] == ("", "warning", "run canceled")
    assert steps_of(execution).get(step_id="greet").status == ExecutionStep.Status.FAILURE


def test_a_step_costs_two_statements_at_each_end(published):
    """Per step: one upsert of the step and one INSERT of its log lines when it starts, and
    the same when it ends, whatever number of lines it logged."""
    execution = run_workflow(published)
    control_plane = ControlPlaneResource(settings_module=SETTINGS)
    record = {
        "organization_id": published.organization_id,
        "execution_id": execution.pk,
        "step_id": "greet",
        "step_type": "transform.template",
        "position": 0,
    }
    logged = [{"level": "info", "message": f"line {n}"} for n in range(20)]

    def statements(call) -> list[str]:
        with CaptureQueriesContext(connection) as queries:
            call()
        return [
            q["sql"]
            for q in queries.captured_queries
            if not q["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))
            and "set_config" not in q["sql"]
        ]

    assert len(statements(lambda: control_plane.step_started(**record, attempt=1))) == 2
    finished = statements(
        lambda: control_plane.step_finished(
            **record, status="success", output={"result": "x"}, logs=logged
        )
    )
    assert len(finished) == 2
    assert len(_log(execution)) == 1 + 20 + 1
