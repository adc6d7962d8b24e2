"""Webhook receiver (`POST /hooks/<token>`), the runs-per-month quota checked in the trigger's
transaction, and control-plane events fanned out to subscribed workflows."""

from __future__ import annotations

import io
import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from rest_framework.test import APIClient

from control_plane.core.tenancy import tenant_context
from control_plane.executions import events
from control_plane.executions import services as execution_services
from control_plane.executions.api import hooks
from control_plane.executions.models import TriggerEvent, WorkflowExecution
from control_plane.organizations import services as organization_services
from control_plane.workflows import triggers
from control_plane.workflows.models import Workflow, WorkflowTrigger
from flowpilot import config
from tests.control_plane.test_malformed_input import GARBAGE
from tests.factories import definition, make_member, make_published_workflow, run_workflow

pytestmark = pytest.mark.django_db

TWO_INPUTS = definition(
    inputs={
        "name": {"type": "string", "default": "world"},
        "team": {"type": "string", "default": "nobody"},
        "count": {"type": "integer", "default": 1},
    }
)


def make_trigger(workflow, **fields) -> WorkflowTrigger:
    with tenant_context(workflow.organization_id):
        return triggers.trigger_create(workflow=workflow, created_by=None, **fields)


def post(token: str, body: object = None, *, raw: bytes | None = None, **extra):
    data = raw if raw is not None else json.dumps(body if body is not None else {}).encode()
    content_type = extra.pop("content_type", "application/json")
    return APIClient().post(f"/hooks/{token}", data=data, content_type=content_type, **extra)


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] and error["message"]
    return error


def _events(org) -> int:
    return TriggerEvent.objects.unscoped().filter(organization=org).count()


def _executions(org) -> int:
    return WorkflowExecution.objects.unscoped().filter(organization=org).count()


def _stored(trigger: WorkflowTrigger) -> WorkflowTrigger:
    return WorkflowTrigger.objects.unscoped().get(pk=trigger.pk)


def _set_runs_quota(org, limit: int | None) -> None:
    with tenant_context(org.pk):
        organization_services.quota_update(organization=org, runs_per_month=limit)


@pytest.fixture
def intake(org, user):
    return make_published_workflow(org, user, TWO_INPUTS, slug="intake")


@pytest.fixture
def hook(intake):
    return make_trigger(intake, kind="webhook", inputs={"team": "support", "name": "bob"})


# -- the receiver --------------------------------------------------------------------------------


class TestReceive:
    def test_accepts_stores_and_merges_trigger_inputs(self, org, hook):
        body = {"inputs": {"name": "ada"}, "ticket": {"id": 7, "subject": "help"}}
        response = post(hook.webhook_token, body)
        assert response.status_code == 202, response.content
        answer = response.json()
        assert set(answer) == {"event_id", "execution_id", "status"}
        assert answer["status"] == "queued"
        event = (
            TriggerEvent.objects.unscoped().select_related("execution").get(pk=answer["event_id"])
        )
        assert event.kind == "webhook" and event.payload == body
        assert event.status == "pending" and event.organization_id == org.pk
        execution = event.execution
        assert execution.pk == answer["execution_id"] and execution.status == "queued"
        assert execution.inputs == {"name": "ada", "team": "support", "count": 1}
        assert _stored(hook).last_triggered_at is not None

    def test_payload_without_inputs_runs_with_the_triggers_inputs(self, hook):
        response = post(hook.webhook_token, {"action": "opened"})
        assert response.status_code == 202, response.content
        execution = WorkflowExecution.objects.unscoped().get(pk=response.json()["execution_id"])
        assert execution.inputs == {"name": "bob", "team": "support", "count": 1}

    def test_unknown_disabled_and_paused_look_the_same(self, intake, hook):
        unknown = _error(post("no-such-token"), 404)
        with tenant_context(intake.organization_id):
            disabled = make_trigger(intake, kind="webhook")
            triggers.trigger_update(trigger=disabled, enabled=False)
        Workflow.objects.unscoped().filter(pk=intake.pk).update(status="paused")
        paused = _error(post(hook.webhook_token), 404)
        for error in (_error(post(disabled.webhook_token), 404), paused):
            assert (error["code"], error["message"]) == (unknown["code"], unknown["message"])
        assert _events(intake.organization) == 0

    def test_an_empty_token_does_not_route(self):
        _error(APIClient().post("/hooks/"), 404)

    def test_signed_trigger_checks_the_signature(self, intake):
        signed = make_trigger(intake, kind="webhook", signing=True)
        raw = json.dumps({"inputs": {"name": "sig"}}).encode()
        error = _error(post(signed.webhook_token, raw=raw), 401)
        assert error["code"] == "invalid_signature"
        wrong = triggers.webhook_signature("not-the-secret", raw)
        error = _error(post(signed.webhook_token, raw=raw, HTTP_X_FLOWPILOT_SIGNATURE=wrong), 401)
        assert error["code"] == "invalid_signature"
        other_body = triggers.webhook_signature(signed.signing_secret, raw + b" ")
        _error(post(signed.webhook_token, raw=raw, HTTP_X_FLOWPILOT_SIGNATURE=other_body), 401)
        assert _events(intake.organization) == 0
        right = triggers.webhook_signature(signed.signing_secret, raw)
        response = post(signed.webhook_token, raw=raw, HTTP_X_FLOWPILOT_SIGNATURE=right)
        assert response.status_code == 202, response.content

    def test_signature_is_checked_before_the_body_is_parsed(self, intake):
        signed = make_trigger(intake, kind="webhook", signing=True)
        error = _error(post(signed.webhook_token, raw=b"{not json"), 401)
        assert error["code"] == "invalid_signature"

    def test_other_content_types_are_stored_as_text(self, hook):
        response = post(
            hook.webhook_token,
            raw=b"token=abc&text=hello+world",
            content_type="application/x-www-form-urlencoded",
        )
        assert response.status_code == 202, response.content
        event = TriggerEvent.objects.unscoped().get(pk=response.json()["event_id"])
        assert event.payload == {
            "body": "token=abc&text=hello+world",
            "content_type": "application/x-www-form-urlencoded",
        }
        binary = post(hook.webhook_token, raw=b"\xff\x00\x01", content_type="image/png")
        assert binary.status_code == 202, binary.content
        event = TriggerEvent.objects.unscoped().get(pk=binary.json()["event_id"])
        assert event.payload == {"body_base64": "/wAB", "content_type": "image/png"}

    def test_a_json_array_is_kept_whole(self, hook):
        response = post(hook.webhook_token, [{"event": "delivered"}, {"event": "open"}])
        assert response.status_code == 202, response.content
        event = TriggerEvent.objects.unscoped().get(pk=response.json()["event_id"])
        assert event.payload == {
            "body": [{"event": "delivered"}, {"event": "open"}],
            "content_type": "application/json",
        }

    def test_oversized_body(self, hook):
        raw = b'{"x": "' + b"a" * hooks.MAX_BODY_BYTES + b'"}'
        assert _error(post(hook.webhook_token, raw=raw), 413)["code"] == "payload_too_large"
        # Without a Content-Length (chunked), the parser stops reading at the limit.
        with pytest.raises(hooks.PayloadTooLarge):
            hooks.RawBodyParser().parse(io.BytesIO(raw))
        assert _events(hook.workflow.organization) == 0

    def test_invalid_inputs_name_the_input(self, hook):
        error = _error(post(hook.webhook_token, {"inputs": {"count": "many"}}), 400)
        assert error["code"] == "invalid_inputs" and "inputs.count" in error["fields"]
        error = _error(post(hook.webhook_token, {"inputs": {"colour": "red"}}), 400)
        assert "inputs.colour" in error["fields"]
        error = _error(post(hook.webhook_token, {"inputs": [1]}), 400)
        assert "inputs" in error["fields"]
        assert _events(hook.workflow.organization) == 0
        assert _stored(hook).last_triggered_at is None

    @pytest.mark.parametrize(
        "raw",
        [b'{"x": NaN}', b'{"x": "\\u0000"}', b'{"x": "\\ud800"}', b"[" * 5000, b"{not json"],
        ids=["nan", "nul", "surrogate", "deep", "broken"],
    )
    def test_unstorable_json_is_a_400(self, hook, raw):
        assert _error(post(hook.webhook_token, raw=raw), 400)["code"] == "parse_error"

    def test_garbage_never_gets_a_500(self, hook):
        failures = []
        for token in (hook.webhook_token, "1", "x" * 300):
            for method in ("post", "put", "patch", "delete", "get"):
                for body in GARBAGE if method != "get" else [b""]:
                    response = getattr(APIClient(), method)(
                        f"/hooks/{token}", data=body, content_type="application/json"
                    )
                    if response.status_code >= 500 or (
                        response.status_code >= 400 and "error" not in response.json()
                    ):
                        failures.append((method, token[:10], body[:40], response.status_code))
        assert failures == []

    def test_a_signed_in_caller_is_not_needed_nor_used(self, hook, user):
        from tests.conftest import bearer_token

        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION="Bearer not-a-session")
        response = client.post(f"/hooks/{hook.webhook_token}", {}, format="json")
        assert response.status_code == 202, response.content
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {bearer_token(user)}")
        response = client.post(f"/hooks/{hook.webhook_token}", {}, format="json")
        assert response.status_code == 202, response.content
        execution = WorkflowExecution.objects.unscoped().get(pk=response.json()["execution_id"])
        assert execution.created_by is None


# -- row-level security --------------------------------------------------------------------------


@pytest.fixture
def owner_lookup(monkeypatch):
    """Production's system alias is the owner role on a connection of its own; a test's rows
    are uncommitted, so here the lookup runs as the owner on the test's connection, and the
    rest of the request under row security as the application role."""
    lookup = hooks.trigger_for_webhook_token

    def as_owner(token):
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")
        try:
            return lookup(token)
        finally:
            with connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL ROLE {config.APP_ROLE}")

    monkeypatch.setattr(hooks, "trigger_for_webhook_token", as_owner)


def test_the_app_role_alone_cannot_find_a_trigger(hook, as_app_role):
    """The documented behaviour: the token lookup must go through the system alias. As the
    application role with no organization set, row security hides every trigger: 404."""
    assert triggers.trigger_for_webhook_token(hook.webhook_token) is None
    _error(post(hook.webhook_token, {}), 404)


def test_the_receiver_under_row_security(org, other_org, hook, as_app_role, owner_lookup):
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        assert cursor.fetchone()[0] == config.APP_ROLE
    response = post(hook.webhook_token, {"inputs": {"name": "rls"}})
    assert response.status_code == 202, response.content
    with tenant_context(org.pk):
        execution = WorkflowExecution.objects.get(pk=response.json()["execution_id"])
        assert execution.inputs["name"] == "rls" and execution.trigger_event.kind == "webhook"
        assert WorkflowTrigger.objects.get(pk=hook.pk).last_triggered_at is not None
    with tenant_context(other_org.pk):
        assert not WorkflowExecution.objects.filter(pk=execution.pk).exists()


# -- quota ---------------------------------------------------------------------------------------


class TestQuota:
    def test_the_fourth_run_of_three_is_refused_and_writes_nothing(self, org, hook):
        _set_runs_quota(org, 3)
        for _ in range(3):
            assert post(hook.webhook_token, {}).status_code == 202
        last = _stored(hook).last_triggered_at
        response = post(hook.webhook_token, {})
        error = _error(response, 429)
        assert error["code"] == "quota_exceeded"
        assert "runs_per_month" in error["message"] and "3" in error["message"]
        now = datetime.now(UTC)
        resets_at = (now.replace(day=1) + timedelta(days=32)).replace(
            day=1, hour=0, minute=0, second=0, microsecond=0
        )
        assert error["details"] == [
            {
                "quota": "runs_per_month",
                "limit": 3,
                "used": 3,
                "resets_at": resets_at.isoformat(),
            }
        ]
        retry_after = int(response["Retry-After"])
        assert abs(retry_after - (resets_at - now).total_seconds()) < 60
        assert (_events(org), _executions(org)) == (3, 3)
        assert _stored(hook).last_triggered_at == last

    def test_every_trigger_kind_counts_and_is_refused(self, org, user, published):
        _set_runs_quota(org, 1)
        run_workflow(published)
        with pytest.raises(execution_services.ApplicationError) as refused:
            run_workflow(published)
        assert refused.value.status_code == 429 and "Retry-After" in refused.value.headers
        _set_runs_quota(org, None)  # back to the plan's 1,000
        run_workflow(published)

    def test_last_months_runs_do_not_count(self, org, published):
        _set_runs_quota(org, 1)
        old = run_workflow(published)
        last_month = datetime.now(UTC).replace(day=1) - timedelta(days=1)
        WorkflowExecution.objects.unscoped().filter(pk=old.pk).update(created_at=last_month)
        run_workflow(published)

    def test_other_organizations_runs_do_not_count(self, org, other_org, published):
        globex = make_member(other_org, "mallory@globex.test")
        theirs = make_published_workflow(other_org, globex, definition(), slug="theirs")
        _set_runs_quota(org, 1)
        for _ in range(3):
            run_workflow(theirs)
        run_workflow(published)


@pytest.mark.django_db(transaction=True)
def test_concurrent_webhooks_never_overshoot_the_quota(org, hook):
    _set_runs_quota(org, 5)
    statuses: list[int] = []
    barrier = threading.Barrier(10)

    def send():
        try:
            barrier.wait()
            statuses.append(post(hook.webhook_token, {}).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [202] * 5 + [429] * 5
    assert (_events(org), _executions(org)) == (5, 5)


# -- events --------------------------------------------------------------------------------------


class TestEvents:
    def test_fans_out_to_the_subscribed_workflows(self, org, user, published):
        second = make_published_workflow(org, user, definition(), slug="second")
        unsubscribed = make_published_workflow(org, user, definition(), slug="third")
        first = make_trigger(published, kind="event", event_type="document.uploaded")
        make_trigger(second, kind="event", event_type="document.uploaded", inputs={"name": "x"})
        make_trigger(unsubscribed, kind="event", event_type="email.received")
        off = make_trigger(unsubscribed, kind="event", event_type="document.uploaded")
        with tenant_context(org.pk):
            triggers.trigger_update(trigger=off, enabled=False)
        started = events.event_emit(
            organization_id=org.pk, event_type="document.uploaded", payload={"document": 9}
        )
        assert sorted(e.workflow_id for e in started) == sorted([published.pk, second.pk])
        for execution in started:
            event = TriggerEvent.objects.unscoped().get(execution=execution)
            assert event.kind == "event"
            assert event.payload == {"event": "document.uploaded", "data": {"document": 9}}
        by_workflow = {e.workflow_id: e for e in started}
        assert by_workflow[second.pk].inputs == {"name": "x"}
        assert _stored(first).last_triggered_at is not None
        assert _stored(off).last_triggered_at is None

    def test_unknown_event_type(self, org):
        with pytest.raises(ValueError, match="unknown event type"):
            events.event_emit(organization_id=org.pk, event_type="document.eaten", payload={})

    def test_one_bad_subscriber_does_not_stop_the_others(self, org, user, published):
        strict = make_published_workflow(
            org, user, definition(inputs={"name": {"type": "string"}}), slug="strict"
        )
        make_trigger(strict, kind="event", event_type="slack.message")  # "name" is required
        make_trigger(published, kind="event", event_type="slack.message")
        started = events.event_emit(
            organization_id=org.pk, event_type="slack.message", payload={"text": "hi"}
        )
        assert [e.workflow_id for e in started] == [published.pk]
        assert _executions(org) == 1

    def test_over_quota_subscribers_are_skipped(self, org, user, published):
        second = make_published_workflow(org, user, definition(), slug="second")
        make_trigger(published, kind="event", event_type="slack.message")
        make_trigger(second, kind="event", event_type="slack.message")
        _set_runs_quota(org, 1)
        started = events.event_emit(organization_id=org.pk, event_type="slack.message", payload={})
        assert len(started) == 1 and _executions(org) == 1

    def test_a_failing_workflow_does_not_start_itself(self, org, user, published):
        alerts = make_published_workflow(org, user, definition(), slug="alerts")
        make_trigger(published, kind="event", event_type="workflow.failed")
        make_trigger(alerts, kind="event", event_type="workflow.failed")
        make_trigger(alerts, kind="event", event_type="workflow.succeeded")
        execution = run_workflow(published)
        with tenant_context(org.pk):
            execution_services.execution_finish(
                run_id="run-1",
                run_status="FAILURE",
                error="boom",
                tags={execution_services.TAG_EXECUTION: str(execution.pk)},
            )
            # The end of the same run again (a repeated status event): no second fan-out.
            execution_services.execution_finish(run_id="run-1", run_status="FAILURE")
        started = TriggerEvent.objects.unscoped().filter(kind="event")
        assert [(e.workflow_id, e.payload) for e in started] == [
            (
                alerts.pk,
                {
                    "event": "workflow.failed",
                    "data": {
                        "execution_id": execution.pk,
                        "workflow": "triage",
                        "status": "failure",
                    },
                },
            )
        ]
        assert WorkflowExecution.objects.unscoped().filter(workflow=published).count() == 1

    def test_fan_out_stays_in_the_organization(self, org, other_org, user, published):
        mallory = make_member(other_org, "mallory@globex.test")
        theirs = make_published_workflow(other_org, mallory, definition(), slug="theirs")
        make_trigger(theirs, kind="event", event_type="document.uploaded")
        make_trigger(published, kind="event", event_type="document.uploaded")
        started = events.event_emit(
            organization_id=org.pk, event_type="document.uploaded", payload={}
        )
        assert [e.workflow_id for e in started] == [published.pk]
        assert _executions(other_org) == 0


@pytest.mark.django_db(transaction=True)
def test_the_receiver_runs_outside_the_signed_in_request_transaction(user):
    """The organization middleware wraps signed-in requests in a transaction; the receiver opts
    out (`own_transaction`), so its own commit happens before its 202 is built."""
    from django.db import connection as db
    from django.http import HttpResponse
    from django.test import RequestFactory

    from control_plane.organizations.middleware import OrganizationContextMiddleware

    seen: dict[str, bool] = {}

    def view_side(request):
        seen[request.path] = db.in_atomic_block
        return HttpResponse(status=204)

    middleware = OrganizationContextMiddleware(view_side)
    for path in ("/hooks/some-token", "/api/v1/users/me"):
        request = RequestFactory().post(path)
        request.user = user
        middleware(request)
    assert seen == {"/hooks/some-token": False, "/api/v1/users/me": True}
