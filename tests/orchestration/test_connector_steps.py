"""The connector steps, email.send and slack.post_message, run as Dagster ops with
execute_in_process: Slack against a local server that speaks its Web API (slack_sdk over HTTP),
email through Django's locmem backend."""

from __future__ import annotations

import logging

import pytest
from dagster import DagsterInstance

from control_plane.core.tenancy import tenant_context
from control_plane.workflows.selectors import workflow_latest_version, workflow_spec
from control_plane.workflows.services import definition_errors
from orchestration.rendering import build_job
from orchestration.repository import default_resources
from orchestration.steps import REGISTRY
from orchestration.steps.schema import definition_schema
from resources.control_plane import ControlPlaneResource
from resources.slack import SlackError, SlackResource
from tests.factories import make_published_workflow, run_workflow, steps_of
from tests.fakes.slack_api import FakeSlack

pytestmark = pytest.mark.django_db


@pytest.fixture
def slack(monkeypatch):
    with FakeSlack() as fake:
        monkeypatch.setenv("SLACK_BOT_TOKEN", fake.token)
        monkeypatch.setenv("SLACK_API_URL", fake.url)
        yield fake


def execute(org, user, raw: dict, inputs: dict | None = None, slug: str = "connector"):
    """Publish `raw`, start it as the API would, run its job in process; (result, steps)."""
    workflow = make_published_workflow(org, user, raw, slug=slug)
    execution = run_workflow(workflow, inputs=inputs or {})
    with tenant_context(workflow.organization_id):
        spec = workflow_spec(version_id=workflow_latest_version(workflow=workflow).pk)
    control_plane = ControlPlaneResource(settings_module="control_plane.settings.test")
    resources = default_resources(control_plane)
    result = build_job(spec, resources).execute_in_process(
        run_config={"inputs": execution.inputs},
        tags={"flowpilot/execution": str(execution.pk)},
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    return result, {s.step_id: s for s in steps_of(execution)}


def slack_step(**config) -> dict:
    return {"steps": [{"id": "post", "type": "slack.post_message", "config": config}]}


def test_the_registry_and_schema_know_both_steps():
    assert {"email.send", "slack.post_message"} <= set(REGISTRY)
    catalog = definition_schema()["x-step-types"]
    assert catalog["email.send"]["resources"] == ["email"]
    assert catalog["slack.post_message"]["resources"] == ["slack"]


# --- slack.post_message ------------------------------------------------------------------------


def test_slack_post_message_posts_text_blocks_and_thread(org, user, slack):
    raw = {
        "inputs": {"who": {"type": "string"}},
        "steps": [
            {
                "id": "post",
                "type": "slack.post_message",
                "config": {
                    "channel": "#deploys",
                    "text": "Deployed by {{ inputs.who }}",
                    "blocks": [
                        {
                            "type": "section",
                            "text": {"type": "mrkdwn", "text": "*{{ inputs.who }}*"},
                        }
                    ],
                },
            },
            {
                "id": "reply",
                "type": "slack.post_message",
                "after": ["post"],
                "config": {
                    "channel": "{{ steps.post.output.channel }}",
                    "text": "details in the thread",
                    "thread_ts": "{{ steps.post.output.ts }}",
                },
            },
        ],
    }
    result, steps = execute(org, user, raw, {"who": "ada"})
    assert result.success
    first, second = slack.messages
    assert first["channel_name"] == "#deploys" and first["text"] == "Deployed by ada"
    assert first["blocks"][0]["text"]["text"] == "*ada*"
    assert second["thread_ts"] == first["ts"] and second["channel"] == first["channel"]
    assert steps["post"].output == {"channel": first["channel"], "ts": first["ts"]}
    assert steps["reply"].status == "success"


def test_slack_without_a_token_fails_naming_the_variable(org, user, slack, monkeypatch):
    monkeypatch.delenv("SLACK_BOT_TOKEN")
    result, steps = execute(org, user, slack_step(channel="#general", text="hi"))
    assert not result.success
    assert "SLACK_BOT_TOKEN" in steps["post"].error
    assert slack.requests == []


def test_slack_with_a_wrong_token_fails_without_showing_it(org, user, slack, monkeypatch, caplog):
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-wrong-secret")
    with caplog.at_level(logging.DEBUG):
        result, steps = execute(org, user, slack_step(channel="#general", text="hi"))
    assert not result.success
    error = steps["post"].error
    assert "invalid_auth" in error and "SLACK_BOT_TOKEN" in error
    assert "xoxb-wrong-secret" not in error
    assert "xoxb-wrong-secret" not in caplog.text
    for event in result.all_events:
        assert "xoxb-wrong-secret" not in str(event)


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda fake: fake.not_in_channels.add("#private"), "not a member of channel #private"),
        (lambda fake: fake.missing_channels.add("#private"), "channel #private was not found"),
        (lambda fake: fake.rate_limit_next(7), "rate-limited chat.postMessage: retry after 7s"),
    ],
    ids=["not_in_channel", "channel_not_found", "ratelimited"],
)
def test_slack_errors_become_clear_step_failures(org, user, slack, setup, expected):
    setup(slack)
    result, steps = execute(org, user, slack_step(channel="#private", text="hi"))
    assert not result.success
    assert steps["post"].status == "failure"
    assert expected in steps["post"].error
    assert slack.messages == []


def test_slack_unreachable_is_a_clear_failure(monkeypatch):
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-any")
    resource = SlackResource(base_url="http://127.0.0.1:9/api/", timeout_seconds=2)
    with pytest.raises(SlackError, match="could not reach Slack at http://127.0.0.1:9/api/"):
        resource.post_message(channel="#general", text="hi")


def test_slack_resource_auth_test_and_rate_limit_details(slack):
    resource = SlackResource()
    assert resource.api_url() == slack.url
    assert resource.auth_test()["team"] == "FlowPilot Test"
    assert slack.requests[-1]["method"] == "auth.test"
    slack.rate_limit_next(3)
    with pytest.raises(SlackError) as caught:
        resource.post_message(channel="#general", text="hi")
    assert caught.value.code == "ratelimited" and caught.value.retry_after == 3
    assert resource.post_message(channel="C0ABC", text="again")["channel"] == "C0ABC"


def test_slack_config_is_checked_at_publish():
    errors = definition_errors(slack_step(channel="#general"))
    assert errors == [{"path": "steps[0].config.text", "message": "Field required", "step": "post"}]
    errors = definition_errors(slack_step(channel="has space", text="x", colour="red"))
    paths = sorted(e["path"] for e in errors)
    assert paths == ["steps[0].config.channel", "steps[0].config.colour"]
    # A templated field may render into anything: it is checked when the step runs.
    assert definition_errors(slack_step(channel="{{ inputs.c }}", text="x")) != []  # unknown input
    assert (
        definition_errors(
            {"inputs": {"c": {"type": "string"}}, **slack_step(channel="{{ inputs.c }}", text="x")}
        )
        == []
    )


# --- email.send --------------------------------------------------------------------------------


def test_email_send_sends_text_and_html_to_rendered_recipients(org, user, mailoutbox):
    raw = {
        "inputs": {"to": {"type": "string"}, "name": {"type": "string"}},
        "steps": [
            {
                "id": "mail",
                "type": "email.send",
                "config": {
                    "to": "{{ inputs.to }}",
                    "cc": ["boss@acme.test"],
                    "subject": "Hello {{ inputs.name }}\n",
                    "body": "Hi {{ inputs.name }}, plain.",
                    "html": "<p>Hi <b>{{ inputs.name }}</b></p>",
                },
            }
        ],
    }
    result, steps = execute(
        org, user, raw, {"to": "ada@acme.test, Bob <bob@acme.test>", "name": "Ada"}
    )
    assert result.success
    (message,) = mailoutbox
    assert message.to == ["ada@acme.test", "Bob <bob@acme.test>"]
    assert message.cc == ["boss@acme.test"]
    assert message.subject == "Hello Ada"
    assert message.body == "Hi Ada, plain."
    assert message.alternatives[0][0] == "<p>Hi <b>Ada</b></p>"
    assert message.alternatives[0][1] == "text/html"
    output = steps["mail"].output
    assert output["recipients"] == ["ada@acme.test", "Bob <bob@acme.test>", "boss@acme.test"]
    assert output["message_id"] == message.extra_headers["Message-ID"]
    assert message.message()["Message-ID"] == output["message_id"]


def test_email_recipients_that_render_wrong_fail_the_step(org, user, mailoutbox):
    raw = {
        "inputs": {"to": {"type": "string"}},
        "steps": [
            {
                "id": "mail",
                "type": "email.send",
                "config": {"to": "{{ inputs.to }}", "subject": "s", "body": "b"},
            }
        ],
    }
    result, steps = execute(org, user, raw, {"to": "not-an-address"})
    assert not result.success
    assert "not an email address: 'not-an-address'" in steps["mail"].error
    assert mailoutbox == []


def test_email_config_is_checked_at_publish():
    def mail(**config):
        return {"steps": [{"id": "mail", "type": "email.send", "config": config}]}

    errors = definition_errors(mail(to=["nobody"], subject="s", body="b"))
    assert [e["path"] for e in errors] == ["steps[0].config.to"]
    assert "not an email address" in errors[0]["message"]
    errors = definition_errors(mail(to=[], subject="a\nb", body="b"))
    assert sorted(e["path"] for e in errors) == ["steps[0].config.subject", "steps[0].config.to"]
    assert definition_errors(mail(to="a@x.test; b@y.test", subject="s", body="b")) == []
