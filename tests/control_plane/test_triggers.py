"""Workflow triggers over HTTP and as services: every kind, every validation error by field,
webhook secrets (URL rotation, a signing secret shown once and stored encrypted, signature
checks), readers vs editors, and other tenants."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from control_plane.core.tenancy import tenant_context
from control_plane.users.tokens import sha256
from control_plane.workflows import services as workflow_services
from control_plane.workflows import triggers
from control_plane.workflows.models import WorkflowTrigger
from tests.conftest import bearer_token
from tests.factories import definition, make_member

pytestmark = pytest.mark.django_db


def _base(workflow_id: int) -> str:
    return f"/api/v1/workflows/{workflow_id}/triggers"


def create(api, workflow, **body):
    return api.post(_base(workflow.pk), body, format="json")


def _error(response, status: int = 400) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json"), response.content
    error = response.json()["error"]
    assert error["code"] and error["message"]
    return error


def _stored(trigger_id: int) -> WorkflowTrigger:
    return WorkflowTrigger.objects.unscoped().get(pk=trigger_id)


def _sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.fixture
def viewer_api(org):
    client = APIClient()
    viewer = make_member(org, "vera@acme.test", role="viewer")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {bearer_token(viewer)}")
    return client


@pytest.fixture
def webhook(api, published):
    response = create(api, published, kind="webhook", name="Zendesk", signing=True)
    assert response.status_code == 201, response.json()
    return response.json()


# -- every kind ----------------------------------------------------------------------------------


class TestKinds:
    def test_manual(self, api, published):
        created = create(api, published, kind="manual", name="Ada", inputs={"name": "ada"})
        assert created.status_code == 201, created.json()
        body = created.json()
        assert body["kind"] == "manual" and body["inputs"] == {"name": "ada"} and body["enabled"]
        assert body["workflow"] == published.pk and body["created_by"] == "alice@acme.test"
        assert not {"cron", "timezone", "url", "signed", "event_type"} & set(body)
        assert api.get(f"{_base(published.pk)}/{body['id']}").json() == body

    def test_schedule_defaults_to_utc_and_keeps_its_zone(self, api, published):
        utc = create(api, published, kind="schedule", cron="0 9 * * 1-5")
        assert utc.status_code == 201, utc.json()
        assert utc.json()["cron"] == "0 9 * * 1-5" and utc.json()["timezone"] == "UTC"
        assert not {"url", "signed", "event_type"} & set(utc.json())
        berlin = create(
            api, published, kind="schedule", cron="*/15 * * * *", timezone="Europe/Berlin"
        )
        read = api.get(f"{_base(published.pk)}/{berlin.json()['id']}").json()
        assert read["cron"] == "*/15 * * * *" and read["timezone"] == "Europe/Berlin"

    def test_webhook_gets_a_url_whose_token_is_found_by_its_hash(self, api, published):
        created = create(api, published, kind="webhook")
        assert created.status_code == 201, created.json()
        body = created.json()
        assert body["signed"] is False and "signing_secret" not in body
        assert not {"cron", "timezone", "event_type"} & set(body)
        prefix = f"{settings.FLOWPILOT_WEB_URL}/hooks/"
        assert body["url"].startswith(prefix)
        token = body["url"].removeprefix(prefix)
        assert len(token) >= 43  # token_urlsafe(32)
        stored = _stored(body["id"])
        assert stored.webhook_token == token and stored.webhook_token_hash == sha256(token)
        assert triggers.trigger_for_webhook_token(token).pk == body["id"]
        assert triggers.trigger_for_webhook_token(token + "x") is None
        assert triggers.trigger_for_webhook_token("") is None
        assert api.get(f"{_base(published.pk)}/{body['id']}").json()["url"] == body["url"]

    def test_event(self, api, published):
        created = create(api, published, kind="event", event_type="document.uploaded")
        assert created.status_code == 201, created.json()
        assert created.json()["event_type"] == "document.uploaded"
        assert not {"cron", "timezone", "url", "signed"} & set(created.json())
        read = api.get(f"{_base(published.pk)}/{created.json()['id']}")
        assert read.json()["event_type"] == "document.uploaded"

    def test_event_types_are_documented(self):
        for name in ("document.uploaded", "slack.message", "email.received"):
            assert triggers.EVENT_TYPES[name]
        assert {"workflow.succeeded", "workflow.failed"} <= set(triggers.EVENT_TYPES)


# -- validation ----------------------------------------------------------------------------------

INVALID_CREATES = [
    ({"kind": "schedule", "cron": "61 * * * *"}, "cron"),
    ({"kind": "schedule", "cron": "0 9 * * 1-5 2030"}, "cron"),
    ({"kind": "schedule", "cron": "@daily"}, "cron"),
    ({"kind": "schedule"}, "cron"),
    ({"kind": "schedule", "cron": "0 9 * * *", "timezone": "Mars/Olympus_Mons"}, "timezone"),
    ({"kind": "schedule", "cron": "0 9 * * *", "timezone": "../../etc/passwd"}, "timezone"),
    ({"kind": "event", "event_type": "document.shredded"}, "event_type"),
    ({"kind": "event"}, "event_type"),
    ({"kind": "manual", "cron": "0 9 * * *"}, "cron"),
    ({"kind": "webhook", "event_type": "slack.message"}, "event_type"),
    ({"kind": "webhook", "timezone": "UTC"}, "timezone"),
    ({"kind": "event", "event_type": "slack.message", "signing": True}, "signing"),
    ({"kind": "schedule", "cron": "0 9 * * *", "signing": True}, "signing"),
    ({"kind": "manual", "inputs": {"nmae": "typo"}}, "inputs.nmae"),
    ({"kind": "manual", "inputs": {"name": 42}}, "inputs.name"),
    ({"kind": "manual", "inputs": ["name"]}, "inputs"),
    ({"kind": "manual", "inputs": "name=ada"}, "inputs"),
    ({"kind": "webhook", "webhook_token": "my-own-token"}, "webhook_token"),
    ({"kind": "sms"}, "kind"),
    ({}, "kind"),
]


@pytest.mark.parametrize(
    ("body", "field"), INVALID_CREATES, ids=[f"{b.get('kind')}-{f}" for b, f in INVALID_CREATES]
)
def test_invalid_create_names_its_field(api, published, body, field):
    error = _error(create(api, published, **body))
    assert field in error["fields"], error
    assert not WorkflowTrigger.objects.unscoped().exists()


def test_a_form_may_send_empty_fields_of_other_kinds(api, published):
    created = create(
        api, published, kind="webhook", cron="", timezone=None, event_type="", signing=False
    )
    assert created.status_code == 201, created.json()
    stored = _stored(created.json()["id"])
    assert stored.cron == stored.timezone == stored.event_type == "" and not stored.signing_secret


def test_inputs_are_checked_against_the_draft_and_the_published_version(api, user, published):
    with tenant_context(published.organization_id):
        workflow_services.workflow_update(
            workflow=published,
            draft_definition=definition(
                inputs={"name": {"type": "string"}, "ticket": {"type": "integer"}}
            ),
        )
    both = create(api, published, kind="manual", inputs={"name": "x", "ticket": 7})
    assert both.status_code == 201, both.json()
    error = _error(create(api, published, kind="manual", inputs={"ticket": "seven"}))
    assert list(error["fields"]) == ["inputs.ticket"]


def test_a_workflow_without_a_definition_takes_any_inputs(api, org, user):
    with tenant_context(org.pk):
        empty = workflow_services.workflow_create(organization=org, created_by=user, name="Empty")
    created = create(api, empty, kind="manual", inputs={"anything": [1, 2]})
    assert created.status_code == 201, created.json()


INVALID_UPDATES = [
    ("schedule", {"cron": "0 25 * * *"}, "cron"),
    ("schedule", {"cron": ""}, "cron"),
    ("schedule", {"timezone": "Europe/Atlantis"}, "timezone"),
    ("schedule", {"event_type": "slack.message"}, "event_type"),
    ("webhook", {"cron": "0 9 * * *"}, "cron"),
    ("webhook", {"signing": True}, "signing"),
    ("event", {"event_type": "nope"}, "event_type"),
    ("event", {"event_type": ""}, "event_type"),
    ("manual", {"kind": "webhook"}, "kind"),
    ("manual", {"inputs": {"unknown": 1}}, "inputs.unknown"),
    ("manual", {"inputs": 3}, "inputs"),
    ("manual", {"enabled": "perhaps"}, "enabled"),
]
KIND_BODIES = {
    "manual": {"kind": "manual"},
    "schedule": {"kind": "schedule", "cron": "0 9 * * *"},
    "webhook": {"kind": "webhook"},
    "event": {"kind": "event", "event_type": "email.received"},
}


@pytest.mark.parametrize(
    ("kind", "changes", "field"), INVALID_UPDATES, ids=[f"{k}-{f}" for k, _, f in INVALID_UPDATES]
)
def test_invalid_update_names_its_field_and_changes_nothing(api, published, kind, changes, field):
    trigger_id = create(api, published, **KIND_BODIES[kind]).json()["id"]
    before = _stored(trigger_id)
    error = _error(api.patch(f"{_base(published.pk)}/{trigger_id}", changes, format="json"))
    assert field in error["fields"], error
    after = _stored(trigger_id)
    assert (after.kind, after.cron, after.timezone, after.event_type, after.inputs) == (
        before.kind,
        before.cron,
        before.timezone,
        before.event_type,
        before.inputs,
    )


def test_update_changes_what_it_may(api, published):
    trigger_id = create(api, published, kind="schedule", cron="0 9 * * *").json()["id"]
    url = f"{_base(published.pk)}/{trigger_id}"
    changes = {
        "name": "Nightly",
        "cron": "30 2 * * *",
        "timezone": "America/New_York",
        "inputs": {"name": "night"},
    }
    updated = api.patch(url, changes, format="json")
    assert updated.status_code == 200, updated.json()
    assert {k: updated.json()[k] for k in changes} == changes
    assert api.patch(url, {"timezone": ""}, format="json").json()["timezone"] == "UTC"

    event_id = create(api, published, kind="event", event_type="slack.message").json()["id"]
    event = api.patch(
        f"{_base(published.pk)}/{event_id}", {"event_type": "workflow.failed"}, format="json"
    )
    assert event.status_code == 200 and event.json()["event_type"] == "workflow.failed"


# -- enable / disable, list filters, delete ------------------------------------------------------


def test_enable_disable_and_list_filters(api, published):
    schedule = create(api, published, kind="schedule", cron="0 9 * * *").json()
    create(api, published, kind="webhook")
    create(api, published, kind="event", event_type="document.uploaded")
    url = f"{_base(published.pk)}/{schedule['id']}"

    disabled = api.patch(url, {"enabled": False}, format="json")
    assert disabled.status_code == 200 and disabled.json()["enabled"] is False
    assert _stored(schedule["id"]).enabled is False

    listing = api.get(_base(published.pk))
    assert listing.status_code == 200 and listing.json()["count"] == 3
    off = api.get(_base(published.pk), {"enabled": "false"}).json()
    assert [t["id"] for t in off["results"]] == [schedule["id"]]
    assert api.get(_base(published.pk), {"enabled": "true"}).json()["count"] == 2
    kinds = api.get(_base(published.pk), {"kind": "webhook"}).json()
    assert [t["kind"] for t in kinds["results"]] == ["webhook"]
    page = api.get(_base(published.pk), {"page_size": 2}).json()
    assert len(page["results"]) == 2 and page["next"]

    assert "enabled" in _error(api.get(_base(published.pk), {"enabled": "maybe"}))["fields"]
    assert "kind" in _error(api.get(_base(published.pk), {"kind": "sms"}))["fields"]

    enabled = api.patch(url, {"enabled": True}, format="json")
    assert enabled.json()["enabled"] is True


def test_delete(api, published, webhook):
    url = f"{_base(published.pk)}/{webhook['id']}"
    token = _stored(webhook["id"]).webhook_token
    assert api.delete(url).status_code == 204
    _error(api.get(url), 404)
    assert triggers.trigger_for_webhook_token(token) is None
    _error(api.delete(url), 404)


# -- webhook secrets -----------------------------------------------------------------------------


def test_rotating_the_url_retires_the_old_token(api, published, webhook):
    old = _stored(webhook["id"]).webhook_token
    rotated = api.post(
        f"{_base(published.pk)}/{webhook['id']}/rotate", {"what": "url"}, format="json"
    )
    assert rotated.status_code == 200, rotated.json()
    assert rotated.json()["url"] != webhook["url"] and "signing_secret" not in rotated.json()
    new = _stored(webhook["id"]).webhook_token
    assert new != old and rotated.json()["url"].endswith(f"/hooks/{new}")
    assert triggers.trigger_for_webhook_token(old) is None
    assert triggers.trigger_for_webhook_token(new).pk == webhook["id"]
    assert _stored(webhook["id"]).signing_secret  # the signing secret is not touched


def test_signing_secret_is_shown_once_and_stored_encrypted(api, published, webhook):
    secret = webhook["signing_secret"]
    assert webhook["signed"] is True and len(secret) >= 43
    url = f"{_base(published.pk)}/{webhook['id']}"
    read = api.get(url).json()
    assert read["signed"] is True and "signing_secret" not in read
    listed = api.get(_base(published.pk)).json()["results"][0]
    assert "signing_secret" not in listed and secret not in str(listed)

    token = webhook["url"].rsplit("/", 1)[1]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT signing_secret, webhook_token FROM workflows_workflowtrigger WHERE id = %s",
            [webhook["id"]],
        )
        raw_secret, raw_token = cursor.fetchone()
    assert raw_secret and secret not in raw_secret
    assert raw_token and token not in raw_token
    assert _stored(webhook["id"]).signing_secret == secret

    rotated = api.post(f"{url}/rotate", {"what": "signing_secret"}, format="json")
    assert rotated.status_code == 200, rotated.json()
    new_secret = rotated.json()["signing_secret"]
    assert new_secret != secret and _stored(webhook["id"]).signing_secret == new_secret
    assert rotated.json()["url"] == webhook["url"]  # the URL is not touched
    assert "signing_secret" not in api.get(url).json()


def test_rotating_a_signing_secret_turns_signing_on(api, published):
    unsigned = create(api, published, kind="webhook").json()
    assert unsigned["signed"] is False
    url = f"{_base(published.pk)}/{unsigned['id']}/rotate"
    rotated = api.post(url, {"what": "signing_secret"}, format="json").json()
    assert rotated["signed"] is True and rotated["signing_secret"]


@pytest.mark.parametrize("what", ["url", "signing_secret"])
def test_only_webhooks_rotate(api, published, what):
    manual = create(api, published, kind="manual").json()
    url = f"{_base(published.pk)}/{manual['id']}/rotate"
    assert "what" in _error(api.post(url, {"what": what}, format="json"))["fields"]


@pytest.mark.parametrize("body", [{}, {"what": "password"}, {"what": "url", "also": 1}])
def test_rotate_needs_a_known_what(api, published, webhook, body):
    url = f"{_base(published.pk)}/{webhook['id']}/rotate"
    assert _error(api.post(url, body, format="json"))["fields"]


def test_webhook_signature_valid(api, published, webhook):
    trigger = _stored(webhook["id"])
    body = b'{"ticket": 42, "text": "printer on fire"}'
    good = _sign(webhook["signing_secret"], body)
    assert triggers.webhook_signature_valid(trigger, body, good)
    assert triggers.webhook_signature_valid(
        trigger, body, triggers.webhook_signature(webhook["signing_secret"], body)
    )
    wrong = [
        _sign(webhook["signing_secret"], body + b" "),  # another body
        _sign("not-the-secret", body),  # another secret
        good.removeprefix("sha256="),  # no scheme
        "sha1=" + good.removeprefix("sha256="),
        good.upper(),
        good[:-2],
        "sha256=",
        "sha256=zz",
        "sha256=é" + good[8:],
        "",
        None,
    ]
    for signature in wrong:
        assert not triggers.webhook_signature_valid(trigger, body, signature), signature

    unsigned = _stored(create(api, published, kind="webhook").json()["id"])
    assert not triggers.webhook_signature_valid(unsigned, body, _sign("", body))


# -- permissions ---------------------------------------------------------------------------------


def test_viewer_reads_without_the_url_and_cannot_write(api, viewer_api, published, webhook):
    base = _base(published.pk)
    url = f"{base}/{webhook['id']}"
    listing = viewer_api.get(base)
    assert listing.status_code == 200
    [seen] = listing.json()["results"]
    assert seen["url"] is None and seen["signed"] is True and "signing_secret" not in seen
    detail = viewer_api.get(url)
    assert detail.status_code == 200 and detail.json()["url"] is None
    token = webhook["url"].rsplit("/", 1)[1]
    assert token not in listing.content.decode() + detail.content.decode()

    _error(viewer_api.post(base, {"kind": "manual"}, format="json"), 403)
    _error(viewer_api.patch(url, {"enabled": False}, format="json"), 403)
    _error(viewer_api.delete(url), 403)
    _error(viewer_api.post(f"{url}/rotate", {"what": "url"}, format="json"), 403)
    assert WorkflowTrigger.objects.unscoped().count() == 1
    assert _stored(webhook["id"]).enabled


# -- other tenants -------------------------------------------------------------------------------


def test_another_organization_gets_404_everywhere(api, outsider_api, other_org, published, webhook):
    trigger_id = webhook["id"]
    before = list(WorkflowTrigger.objects.unscoped().values())
    paths = {
        "list": f"workflows/{published.pk}/triggers",
        "detail": f"workflows/{published.pk}/triggers/{trigger_id}",
        "rotate": f"workflows/{published.pk}/triggers/{trigger_id}/rotate",
    }
    calls = {
        "list": [("get", None), ("post", {"kind": "manual", "name": "pwned"})],
        "detail": [("get", None), ("patch", {"enabled": False}), ("delete", None)],
        "rotate": [("post", {"what": "url"}), ("post", {"what": "signing_secret"})],
    }
    routes = [
        ("/api/v1/orgs/acme/", {}),
        ("/api/v1/orgs/globex/", {}),
        ("/api/v1/", {"HTTP_X_ORGANIZATION": "acme"}),
        ("/api/v1/", {"HTTP_X_ORGANIZATION": "globex"}),
        ("/api/v1/", {}),  # mallory's only organization: globex
    ]
    attempts = 0
    for prefix, headers in routes:
        for name, path in paths.items():
            for method, body in calls[name]:
                response = getattr(outsider_api, method)(
                    prefix + path, body, format="json", **headers
                )
                _error(response, 404)
                assert "Zendesk" not in response.content.decode()
                attempts += 1
    assert attempts == 35
    assert list(WorkflowTrigger.objects.unscoped().values()) == before


def test_a_trigger_of_another_workflow_is_404(api, org, user, published, webhook):
    with tenant_context(org.pk):
        other = workflow_services.workflow_create(organization=org, created_by=user, name="Other")
    base = _base(other.pk)
    _error(api.get(f"{base}/{webhook['id']}"), 404)
    _error(api.patch(f"{base}/{webhook['id']}", {"enabled": False}, format="json"), 404)
    _error(api.delete(f"{base}/{webhook['id']}"), 404)
    _error(api.post(f"{base}/{webhook['id']}/rotate", {"what": "url"}, format="json"), 404)
    assert api.get(base).json()["count"] == 0
    assert _stored(webhook["id"]).enabled
    _error(api.get(f"{_base(999999)}/{webhook['id']}"), 404)
    _error(api.get(_base(999999)), 404)


def test_create_and_list_under_row_level_security(api, published, request):
    request.getfixturevalue("as_app_role")
    created = create(api, published, kind="webhook", signing=True, inputs={"name": "rls"})
    assert created.status_code == 201, created.json()
    schedule = create(api, published, kind="schedule", cron="0 6 * * *", timezone="Asia/Tokyo")
    assert schedule.status_code == 201, schedule.json()
    listing = api.get(_base(published.pk))
    assert listing.status_code == 200
    assert {t["id"] for t in listing.json()["results"]} == {
        created.json()["id"],
        schedule.json()["id"],
    }
    detail = api.get(f"{_base(published.pk)}/{created.json()['id']}").json()
    assert detail["signed"] is True and detail["url"] == created.json()["url"]
    rotated = api.post(
        f"{_base(published.pk)}/{created.json()['id']}/rotate", {"what": "url"}, format="json"
    )
    assert rotated.status_code == 200 and rotated.json()["url"] != created.json()["url"]
    # No tenant in context: row-level security shows the application role no triggers at all.
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM workflows_workflowtrigger")
        assert cursor.fetchone()[0] == 0
