"""The built-in template gallery: every template instantiates with its defaults into a valid
draft, renders, and runs end to end against the echo server, a fake Slack and locmem email."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from dagster import DagsterInstance

from control_plane.core.tenancy import tenant_context
from control_plane.workflows import services as workflow_services
from control_plane.workflows import templates
from control_plane.workflows.models import Workflow
from control_plane.workflows.selectors import workflow_latest_version, workflow_spec
from flowpilot.local_http import LocalHTTPServer
from orchestration.rendering import build_job
from orchestration.repository import default_resources
from resources.control_plane import ControlPlaneResource
from tests.factories import run_workflow, steps_of
from tests.fakes.slack_api import FakeSlack
from tests.template_support import instantiate

pytestmark = pytest.mark.django_db

BUILTIN = sorted(templates.builtin_templates())


# --- local servers -----------------------------------------------------------------------------


class _JsonHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        document = self.server.owner.documents.get(self.path.split("?")[0])
        raw = json.dumps(document).encode()
        self.send_response(200 if document is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format, *args):  # quiet
        return


class JsonServer(LocalHTTPServer):
    """Serves fixed JSON documents by path: the feeds and reports the gallery reads."""

    handler = _JsonHandler

    def __init__(self) -> None:
        self.documents: dict[str, Any] = {}
        super().__init__()


@pytest.fixture
def json_server():
    with JsonServer() as server:
        yield server


@pytest.fixture
def slack(monkeypatch):
    with FakeSlack() as fake:
        monkeypatch.setenv("SLACK_BOT_TOKEN", fake.token)
        monkeypatch.setenv("SLACK_API_URL", fake.url)
        yield fake


@dataclass
class Servers:
    echo: str
    json: JsonServer


@dataclass
class Outcome:
    success: bool
    steps: dict[str, Any]
    slack: FakeSlack
    mail: list

    def status(self) -> dict[str, str]:
        return {step_id: step.status for step_id, step in self.steps.items()}


def publish_and_run(workflow_id: int, user, inputs: dict, slack: FakeSlack, mail) -> Outcome:
    """Publish the draft, start it as the API would, and run its job in process."""
    workflow = Workflow.objects.unscoped().get(pk=workflow_id)
    with tenant_context(workflow.organization_id):
        workflow_services.workflow_publish(workflow=workflow, published_by=user)
        spec = workflow_spec(version_id=workflow_latest_version(workflow=workflow).pk)
    execution = run_workflow(workflow, inputs=inputs)
    control_plane = ControlPlaneResource(settings_module="control_plane.settings.test")
    result = build_job(spec, default_resources(control_plane)).execute_in_process(
        run_config={"inputs": execution.inputs},
        tags={"flowpilot/execution": str(execution.pk)},
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    steps = {s.step_id: s for s in steps_of(execution)}
    return Outcome(result.success, steps, slack, list(mail))


# --- the gallery, end to end ---------------------------------------------------------------------


@dataclass
class Case:
    """How to run one built-in template locally, and what must have happened."""

    values: Callable[[Servers], dict[str, Any]]
    check: Callable[[Outcome], None]
    inputs: dict[str, Any] = field(default_factory=dict)
    documents: dict[str, Any] = field(default_factory=dict)


def _check_keyword_alert(out: Outcome) -> None:
    (message,) = out.slack.messages_in("#alerts")
    assert message["text"].startswith(':rotating_light: "outage" found at http://')
    assert "(HTTP 200)" in message["text"]


def _check_digest(out: Outcome) -> None:
    (mail,) = out.mail
    assert mail.to == ["ops@acme.test"] and mail.subject == "Morning numbers"
    assert mail.body.startswith("Today's report:\n")
    assert "- method: GET" in mail.body and "- path: /reports/daily" in mail.body


def _check_lead(out: Outcome) -> None:
    (message,) = out.slack.messages_in("#sales")
    assert "Ada (ada@lovelace.test), unknown role at lovelace.test" in message["text"]
    assert "New lead from webinar" in message["text"]
    crm = out.steps["crm"].output["body"]  # the echo server answers with what it got
    assert crm["path"] == "/crm" and crm["echo"]["company"] == "lovelace.test"
    assert out.steps["enrich"].output["body"]["echo"] == {
        "email": "ada@lovelace.test",
        "name": "Ada",
    }


def _check_ticket(out: Outcome) -> None:
    assert out.steps["classify"].output == {"result": "billing"}
    (message,) = out.slack.messages_in("#support-billing")
    assert message["text"].startswith("*[billing]* Refund for a double charge (from Bo Shop)")
    assert ">I was charged twice" in message["text"]


def _check_uptime(out: Outcome) -> None:
    (mail,) = out.mail
    assert mail.to == ["oncall@acme.test"]
    assert mail.subject.startswith("DOWN: http://") and mail.subject.endswith("answered 503")
    (message,) = out.slack.messages_in("#ops")
    assert "HTTP 503 (expected 200)" in message["text"]


def _check_form(out: Outcome) -> None:
    (message,) = out.slack.messages_in("#leads")
    assert message["text"] == "New contact form submission"
    section = message["blocks"][1]["text"]["text"]
    assert section == "• *Full name*: Ada Lovelace\n• *Message*: Call me"


def _check_feed(out: Outcome) -> None:
    (mail,) = out.mail
    assert mail.to == ["readers@acme.test"] and mail.subject == "Fresh posts (2)"
    assert "* First post\n  https://blog.test/1" in mail.body and "Third" not in mail.body
    html = mail.alternatives[0][0]
    assert '<a href="https://blog.test/1">First post</a><br>Tom &amp; Jerry' in html


def _check_meeting(out: Outcome) -> None:
    (mail,) = out.mail
    assert mail.to == ["ada@acme.test", "bob@acme.test"] and mail.cc == ["archive@acme.test"]
    assert mail.subject == "Notes: Launch review (2030-01-02)"
    assert "We ship on Friday." in mail.body
    assert "Action items:\n- Ada: Ship it\n- Book the room\n" in mail.body
    assert mail.body.endswith("--\nSent by FlowPilot")
    html = mail.alternatives[0][0]
    assert "<li>Ada: Ship it</li>" in html and "<h2>Launch review</h2>" in html


def _check_welcome(out: Outcome) -> None:
    (mail,) = out.mail
    assert mail.to == ["grace@user.test"] and mail.subject == "Welcome to FlowPilot, Grace!"
    assert "https://flowpilot.test/start" in mail.body
    (message,) = out.slack.messages_in("#signups")
    assert message["text"].startswith(":tada: Grace (grace@user.test) signed up")


def _check_reminder(out: Outcome) -> None:
    (message,) = out.slack.messages_in("#team")
    assert message["text"] == "Stand-up in 5 minutes :coffee:"


FEED = {
    "version": "https://jsonfeed.org/version/1.1",
    "items": [
        {"id": "1", "title": "First post", "url": "https://blog.test/1", "summary": "Tom & Jerry"},
        {"id": "2", "title": "Second", "url": "https://blog.test/2"},
        {"id": "3", "title": "Third", "url": "https://blog.test/3"},
    ],
}

CASES: dict[str, Case] = {
    "keyword-alert": Case(
        values=lambda s: {"source_url": f"{s.echo}/news/big-OUTAGE-today"},
        check=_check_keyword_alert,
    ),
    "daily-digest-email": Case(
        values=lambda s: {
            "source_url": f"{s.echo}/reports/daily",
            "recipients": ["ops@acme.test"],
            "subject": "Morning numbers",
        },
        check=_check_digest,
    ),
    "lead-enrichment": Case(
        values=lambda s: {"enrichment_url": f"{s.echo}/enrich", "crm_webhook_url": f"{s.echo}/crm"},
        inputs={"email": "ada@lovelace.test", "name": "Ada", "source": "webinar"},
        check=_check_lead,
    ),
    "ticket-routing": Case(
        values=lambda s: {},
        inputs={
            "subject": "Refund for a double charge",
            "body": "I was charged twice",
            "customer": "Bo Shop",
        },
        check=_check_ticket,
    ),
    "uptime-check": Case(
        values=lambda s: {"url": f"{s.echo}/status/503", "alert_emails": ["oncall@acme.test"]},
        check=_check_uptime,
    ),
    "form-to-slack": Case(
        values=lambda s: {},
        inputs={"submission": {"full_name": "Ada Lovelace", "message": "Call me"}},
        check=_check_form,
    ),
    "feed-to-email": Case(
        values=lambda s: {
            "feed_url": f"{s.json.url}/feed.json",
            "recipients": ["readers@acme.test"],
            "subject": "Fresh posts",
            "max_items": 2,
        },
        documents={"/feed.json": FEED},
        check=_check_feed,
    ),
    "meeting-notes": Case(
        values=lambda s: {"cc": ["archive@acme.test"]},
        inputs={
            "title": "Launch review",
            "date": "2030-01-02",
            "notes": "We ship on Friday.\n",
            "attendees": ["ada@acme.test", "bob@acme.test"],
            "action_items": [{"owner": "Ada", "task": "Ship it"}, "Book the room"],
        },
        check=_check_meeting,
    ),
    "welcome-email": Case(
        values=lambda s: {
            "product_name": "FlowPilot",
            "getting_started_url": "https://flowpilot.test/start",
        },
        inputs={"email": "grace@user.test", "name": "Grace"},
        check=_check_welcome,
    ),
    "slack-reminder": Case(values=lambda s: {}, check=_check_reminder),
}


def test_the_gallery_is_useful_and_every_template_has_a_case():
    assert len(BUILTIN) >= 8
    assert set(CASES) == set(BUILTIN)
    used = {
        step["type"]
        for template in templates.builtin_templates().values()
        for step in template.definition["steps"]
    }
    assert used == {"transform.template", "http.request", "email.send", "slack.post_message"}


@pytest.mark.parametrize("slug", BUILTIN)
def test_builtin_instantiates_with_defaults_into_a_valid_draft_that_renders(api, user, slug):
    response = instantiate(api, slug, name=f"Default {slug}")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "draft" and body["template"] == slug and body["problems"] == []
    workflow = Workflow.objects.unscoped().get(pk=body["id"])
    assert workflow_services.definition_errors(workflow.draft_definition) == []
    assert templates.placeholders_used(workflow.draft_definition) == set()
    with tenant_context(workflow.organization_id):
        version = workflow_services.workflow_publish(workflow=workflow, published_by=user)
        spec = workflow_spec(version_id=version.pk)
    control_plane = ControlPlaneResource(settings_module="control_plane.settings.test")
    job = build_job(spec, default_resources(control_plane))
    assert {node.name for node in job.graph.nodes} == {
        step["id"] for step in workflow.draft_definition["steps"]
    }


@pytest.mark.parametrize("slug", BUILTIN)
def test_builtin_runs_end_to_end(api, user, slug, echo_server, json_server, slack, mailoutbox):
    case = CASES[slug]
    json_server.documents.update(case.documents)
    values = case.values(Servers(echo=echo_server.url, json=json_server))
    response = instantiate(api, slug, values)
    assert response.status_code == 201, response.json()
    assert response.json()["problems"] == []
    outcome = publish_and_run(response.json()["id"], user, case.inputs, slack, mailoutbox)
    assert outcome.success, {k: (s.status, s.error) for k, s in outcome.steps.items()}
    assert set(outcome.status().values()) == {"success"}
    case.check(outcome)


def test_keyword_alert_stays_quiet_without_the_keyword(api, user, echo_server, slack, mailoutbox):
    values = {"source_url": f"{echo_server.url}/news/all-good", "keyword": "outage"}
    response = instantiate(api, "keyword-alert", values)
    outcome = publish_and_run(response.json()["id"], user, {}, slack, mailoutbox)
    assert outcome.success
    assert outcome.status() == {"fetch": "success", "check": "success", "alert": "skipped"}
    assert slack.messages == []


def test_uptime_check_is_quiet_when_healthy(api, user, echo_server, slack, mailoutbox):
    response = instantiate(api, "uptime-check", {"url": f"{echo_server.url}/healthz"})
    outcome = publish_and_run(response.json()["id"], user, {}, slack, mailoutbox)
    assert outcome.success
    assert outcome.status()["email_alert"] == outcome.status()["slack_alert"] == "skipped"
    assert slack.messages == [] and mailoutbox == []


def test_feed_sends_nothing_when_empty_and_digest_lists_items(
    api, user, echo_server, json_server, slack, mailoutbox
):
    response = instantiate(api, "feed-to-email", {"feed_url": f"{echo_server.url}/feed"})
    outcome = publish_and_run(response.json()["id"], user, {}, slack, mailoutbox)
    assert outcome.success and mailoutbox == []
    # Dagster skips `send` after `render` without running it: only the condition is recorded.
    assert outcome.status() == {"fetch": "success", "entries": "success", "render": "skipped"}

    json_server.documents["/daily"] = {"items": [{"title": "A"}, {"name": "B"}, "C"], "n": 3}
    values = {"source_url": f"{json_server.url}/daily", "recipients": ["x@acme.test"]}
    response = instantiate(api, "daily-digest-email", values, slug="digest-items")
    outcome = publish_and_run(response.json()["id"], user, {}, slack, mailoutbox)
    assert outcome.success
    assert mailoutbox[-1].body == "3 item(s):\n- A\n- B\n- C\n"


@pytest.mark.parametrize(
    ("inputs", "category", "channel"),
    [
        ({"subject": "App crashes on login", "body": "500 error"}, "bug", "#support-bugs"),
        ({"subject": "Question", "body": "How do I invite people?"}, "general", "#support"),
    ],
)
def test_ticket_routing_rules(api, user, slack, mailoutbox, inputs, category, channel):
    response = instantiate(api, "ticket-routing", {"general_channel": "#support"})
    outcome = publish_and_run(response.json()["id"], user, inputs, slack, mailoutbox)
    assert outcome.success and outcome.steps["classify"].output == {"result": category}
    assert len(slack.messages_in(channel)) == 1


# --- placeholders ------------------------------------------------------------------------------


def test_fill_replaces_whole_values_with_json_and_inner_ones_with_text():
    definition = {
        "a": "[[ n ]]",
        "b": " [[n]] ",
        "c": "every [[ n ]]s, to [[ to ]], [[ unknown ]]",
        "d": ["[[ to ]]", {"e": "[[ flag ]]"}],
        "f": "[[ text ]]",
        7: 7,
    }
    values = {"n": 10, "to": ["a@x.test"], "flag": False, "text": "literal [[ n ]] {{ x }}"}
    assert templates.fill(definition, values) == {
        "a": 10,
        "b": 10,
        "c": 'every 10s, to ["a@x.test"], [[ unknown ]]',
        "d": [["a@x.test"], {"e": False}],
        "f": "literal [[ n ]] {{ x }}",  # inserted verbatim, never scanned again
        7: 7,
    }
    assert templates.placeholders_used(definition) == {"n", "to", "flag", "text", "unknown"}


def test_gallery_templates_describe_their_placeholders():
    for template in templates.builtin_templates().values():
        declared = {p["name"] for p in template.placeholders}
        assert templates.placeholders_used(template.definition) == declared, template.slug
        assert template.description and template.required_connectors is not None
