"""Connectors: the API (CRUD, write-only credentials checked per kind, other tenants, roles),
`config.connector` checked when validating and publishing, and runs that post to Slack with a
connector's token without it ever reaching Dagster."""

from __future__ import annotations

import pytest
from dagster import DagsterInstance, serialize_value
from django.db import connection
from rest_framework.test import APIClient

from control_plane.connectors import selectors as connector_selectors
from control_plane.connectors import services as connector_services
from control_plane.connectors.models import Connector
from control_plane.core.tenancy import tenant_context
from control_plane.workflows.selectors import workflow_latest_version, workflow_spec
from orchestration.rendering import build_job
from orchestration.repository import default_resources
from orchestration.steps import definition as definitions
from resources.control_plane import ControlPlaneResource
from tests.conftest import bearer_token
from tests.factories import make_member, make_published_workflow, run_workflow, steps_of
from tests.fakes.slack_api import FakeSlack

pytestmark = pytest.mark.django_db

TOKEN = "xoxb-connector-7f3a9c1e5b2d4680"
CONNECTORS = "/api/v1/connectors"


def assert_error(response, status: int, code: str | None = None) -> dict:
    """Every refusal in the one JSON error shape."""
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]


def slack_definition(connector: str | None = "support-slack", text: str = "hi") -> dict:
    config = {"channel": "#bugs", "text": text}
    if connector is not None:
        config["connector"] = connector
    return {"steps": [{"id": "notify", "type": "slack.post_message", "config": config}]}


def make_connector(organization, name="support-slack", token=TOKEN) -> Connector:
    with tenant_context(organization.pk):
        return connector_services.connector_create(
            organization=organization,
            created_by=None,
            name=name,
            kind="slack",
            credentials={"bot_token": token},
        )


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {bearer_token(user)}")
    return client


# CRUD and write-only credentials ------------------------------------------------------------


def test_connector_crud_never_returns_credentials(api):
    body = {
        "name": "support-slack",
        "kind": "slack",
        "description": "Support workspace",
        "credentials": {"bot_token": TOKEN},
    }
    created = api.post(CONNECTORS, body, format="json")
    assert created.status_code == 201, created.content
    connector = created.json()
    assert connector["credentials"] == {"bot_token": "set"}
    assert {connector["name"], connector["kind"]} == {"support-slack", "slack"}
    detail = f"{CONNECTORS}/{connector['id']}"

    api.post(
        CONNECTORS,
        {"name": "ops-slack", "kind": "slack", "credentials": {"bot_token": "xoxb-ops"}},
        format="json",
    )
    responses = [
        api.get(CONNECTORS),
        api.get(f"{CONNECTORS}?kind=slack&search=support"),
        api.get(detail),
        api.get(f"/api/v1/orgs/acme/connectors/{connector['id']}"),
        api.patch(detail, {"description": "Renamed", "name": "helpdesk-slack"}, format="json"),
        api.patch(detail, {"credentials": {"bot_token": TOKEN + "-v2"}}, format="json"),
    ]
    for response in responses:
        assert response.status_code == 200, response.content
        assert TOKEN not in response.content.decode() and "xoxb-ops" not in str(response.content)
    listed = api.get(CONNECTORS).json()
    assert listed["count"] == 2 and [c["name"] for c in listed["results"]] == [
        "helpdesk-slack",
        "ops-slack",
    ]
    assert api.get(f"{CONNECTORS}?search=helpdesk").json()["count"] == 1
    assert api.get(f"{CONNECTORS}?kind=slack&page_size=1").json()["next"]
    assert api.get(detail).json()["description"] == "Renamed"

    # Encrypted at rest: the raw column is a Fernet token ...
    with connection.cursor() as cursor:
        cursor.execute("SELECT credentials FROM connectors_connector")
        raw = [row[0] for row in cursor.fetchall()]
    assert len(raw) == 2
    for value in raw:
        assert value.startswith("gAAAA") and "xoxb" not in value
    # ... which decrypts, for runs only, to the latest value.
    organization_id = Connector.objects.unscoped().get(pk=connector["id"]).organization_id
    with tenant_context(organization_id):
        credentials = connector_selectors.connector_credentials(
            organization_id=organization_id, name="helpdesk-slack"
        )
    assert credentials == {"bot_token": TOKEN + "-v2"}

    assert api.delete(detail).status_code == 204
    assert_error(api.get(detail), 404, "not_found")
    assert api.get(CONNECTORS).json()["count"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"credentials": {}}, "credentials.bot_token"),
        ({"credentials": {"bot_token": ""}}, "credentials.bot_token"),
        ({"credentials": {"bot_token": "not a token"}}, "credentials.bot_token"),
        ({"credentials": {"bot_token": 42}}, "credentials.bot_token"),
        ({"credentials": {"bot_token": TOKEN, "extra": "x"}}, "credentials.extra"),
        ({"credentials": "xoxb-plain-string"}, "credentials"),
        ({"credentials": None}, "credentials"),
        ({"kind": "jira"}, "kind"),
        ({"name": "Support Slack"}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 64}, "name"),
    ],
)
def test_invalid_input_names_the_field(api, body, field):
    full = {"name": "support-slack", "kind": "slack", "credentials": {"bot_token": TOKEN}}
    error = assert_error(api.post(CONNECTORS, {**full, **body}, format="json"), 400)
    assert field in error["fields"], error
    assert TOKEN not in str(error)
    assert api.get(CONNECTORS).json()["count"] == 0


def test_duplicate_names_and_read_only_kind(api, org):
    make_connector(org)
    body = {"name": "support-slack", "kind": "slack", "credentials": {"bot_token": TOKEN}}
    assert_error(api.post(CONNECTORS, body, format="json"), 409, "conflict")
    other = make_connector(org, "other-slack")
    detail = f"{CONNECTORS}/{other.pk}"
    assert_error(api.patch(detail, {"name": "support-slack"}, format="json"), 409)
    error = assert_error(api.patch(detail, {"credentials": {"token": "x"}}, format="json"), 400)
    assert set(error["fields"]) == {"credentials.bot_token", "credentials.token"}
    # kind is not an updatable field: ignored by the input, never changes
    api.patch(detail, {"kind": "email"}, format="json")
    assert api.get(detail).json()["kind"] == "slack"
    for payload in ("[1, 2]", "not json", '{"name": "a\\u0000b"}'):
        response = api.patch(detail, payload, content_type="application/json")
        assert_error(response, 400)


# Permissions and other tenants -------------------------------------------------------------


def test_viewer_reads_but_cannot_manage(api, org):
    connector = make_connector(org)
    viewer = client_for(make_member(org, "vic@acme.test", "viewer"))
    detail = f"{CONNECTORS}/{connector.pk}"
    assert viewer.get(CONNECTORS).json()["count"] == 1
    assert viewer.get(detail).json()["credentials"] == {"bot_token": "set"}
    body = {"name": "mine", "kind": "slack", "credentials": {"bot_token": TOKEN}}
    assert_error(viewer.post(CONNECTORS, body, format="json"), 403, "permission_denied")
    assert_error(viewer.patch(detail, {"description": "x"}, format="json"), 403)
    assert_error(viewer.delete(detail), 403)
    assert api.get(CONNECTORS).json()["count"] == 1


def test_other_organizations_connectors_are_not_found(org, other_org, outsider_api):
    connector = make_connector(org)
    make_connector(other_org, "globex-slack", token="xoxb-globex")
    attempts = []
    for path, headers in (
        (f"{CONNECTORS}/{connector.pk}", {}),
        (f"{CONNECTORS}/{connector.pk}", {"HTTP_X_ORGANIZATION": "globex"}),
        (f"{CONNECTORS}/{connector.pk}", {"HTTP_X_ORGANIZATION": "acme"}),
        (f"/api/v1/orgs/globex/connectors/{connector.pk}", {}),
        (f"/api/v1/orgs/acme/connectors/{connector.pk}", {}),
    ):
        attempts += [
            outsider_api.get(path, **headers),
            outsider_api.patch(path, {"description": "pwned"}, format="json", **headers),
            outsider_api.delete(path, **headers),
        ]
    for response in attempts:
        assert_error(response, 404)
        assert TOKEN not in response.content.decode()
        assert "support-slack" not in response.content.decode()
    listed = outsider_api.get(CONNECTORS).json()
    assert [c["name"] for c in listed["results"]] == ["globex-slack"]
    with tenant_context(org.pk):
        assert Connector.objects.get(pk=connector.pk).description == ""


def test_connectors_under_the_application_role(org, other_org, api, as_app_role):
    """Row-level security too: the app role sees and writes only the organization in context."""
    body = {"name": "support-slack", "kind": "slack", "credentials": {"bot_token": TOKEN}}
    created = api.post(CONNECTORS, body, format="json")
    assert created.status_code == 201, created.content
    detail = f"{CONNECTORS}/{created.json()['id']}"
    assert api.get(detail).json()["credentials"] == {"bot_token": "set"}
    assert api.patch(detail, {"description": "d"}, format="json").status_code == 200
    with tenant_context(other_org.pk):
        assert Connector.objects.unscoped().count() == 0  # RLS hides acme's row
    with tenant_context(org.pk):
        assert connector_selectors.connector_kinds(organization_id=org.pk) == {
            "support-slack": "slack"
        }
    assert api.delete(detail).status_code == 204


# Validation and publishing ------------------------------------------------------------------


def test_definition_validation_checks_connector_names_and_kinds():
    raw = slack_definition("support-slack")
    assert definitions.validate(raw) == []  # not checked without the organization's connectors
    assert definitions.validate(raw, connectors={"support-slack"}) == []
    assert definitions.validate(raw, connectors={"support-slack": "slack"}) == []

    [error] = definitions.validate(raw, connectors={"ops-slack": "slack"})
    assert (error.path, error.step) == ("steps[0].config.connector", "notify")
    assert "unknown connector 'support-slack'" in error.message and "ops-slack" in error.message

    [error] = definitions.validate(raw, connectors={"support-slack": "email"})
    assert (error.path, error.step) == ("steps[0].config.connector", "notify")
    assert "email connector" in error.message and "needs a slack connector" in error.message

    templated = {**slack_definition("{{ inputs.x }}"), "inputs": {"x": {"type": "string"}}}
    [error] = definitions.validate(templated, connectors=set())
    assert error.path == "steps[0].config.connector" and "template" in error.message

    # Other step types do not take a connector.
    other = {
        "steps": [
            {"id": "t", "type": "transform.template", "config": {"template": "x", "connector": "a"}}
        ]
    }
    [error] = definitions.validate(other, connectors={"a": "slack"})
    assert error.path == "steps[0].config.connector" and error.step == "t"


def test_validate_endpoint_and_draft_problems_report_unknown_connectors(api, org):
    validate = api.post(
        "/api/v1/workflows/validate", {"definition": slack_definition()}, format="json"
    )
    assert validate.status_code == 200
    [error] = validate.json()["errors"]
    assert error["path"] == "steps[0].config.connector" and error["step"] == "notify"

    draft = api.post(
        "/api/v1/workflows", {"name": "Notify", "definition": slack_definition()}, format="json"
    ).json()
    problems = api.get(f"/api/v1/workflows/{draft['id']}").json()["problems"]
    assert [(p["path"], p["step"]) for p in problems] == [("steps[0].config.connector", "notify")]

    make_connector(org)
    body = {"definition": slack_definition()}
    again = api.post("/api/v1/workflows/validate", body, format="json")
    assert again.json() == {"valid": True, "errors": []}
    assert api.get(f"/api/v1/workflows/{draft['id']}").json()["problems"] == []


def test_publish_is_refused_until_the_connector_exists_and_delete_in_use_conflicts(api, org):
    draft = api.post(
        "/api/v1/workflows", {"name": "Notify", "definition": slack_definition()}, format="json"
    ).json()
    publish = f"/api/v1/workflows/{draft['id']}/publish"
    error = assert_error(api.post(publish, {}, format="json"), 400, "invalid_definition")
    assert list(error["fields"]) == ["definition.steps[0].config.connector"]
    assert "step 'notify'" in error["fields"]["definition.steps[0].config.connector"][0]
    assert error["details"][0]["step"] == "notify"

    # Once the organization has the connector, the same draft publishes.
    connector = make_connector(org)
    assert api.post(publish, {}, format="json").status_code in (200, 201)

    detail = f"{CONNECTORS}/{connector.pk}"
    error = assert_error(api.delete(detail), 409, "connector_in_use")
    assert "'Notify'" in error["message"]
    assert error["details"][0]["workflow_id"] == draft["id"]
    assert_error(api.patch(detail, {"name": "renamed"}, format="json"), 409, "connector_in_use")
    assert api.patch(detail, {"description": "still fine"}, format="json").status_code == 200
    assert api.get(detail).status_code == 200

    # A newer version without it frees the connector.
    api.patch(
        f"/api/v1/workflows/{draft['id']}",
        {"definition": slack_definition(None)},
        format="json",
    )
    assert api.post(publish, {}, format="json").status_code in (200, 201)
    assert api.delete(detail).status_code == 204


# Run time -----------------------------------------------------------------------------------


@pytest.fixture
def slack(monkeypatch):
    """The fake Slack accepts only the connector's token; the environment's is another."""
    with FakeSlack(token=TOKEN) as fake:
        monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-deployment-token")
        monkeypatch.setenv("SLACK_API_URL", fake.url)
        yield fake


def _execute(workflow):
    execution = run_workflow(workflow, inputs={})
    with tenant_context(workflow.organization_id):
        spec = workflow_spec(version_id=workflow_latest_version(workflow=workflow).pk)
    resources = default_resources(
        ControlPlaneResource(settings_module="control_plane.settings.test")
    )
    instance = DagsterInstance.ephemeral()
    result = build_job(spec, resources).execute_in_process(
        run_config={"inputs": execution.inputs},
        tags={"flowpilot/execution": str(execution.pk)},
        instance=instance,
        raise_on_error=False,
    )
    return result, execution, instance


def _dagster_record(result, instance) -> str:
    """Everything Dagster stored about the run: the run, its config and tags, every event."""
    run = instance.get_run_by_id(result.run_id)
    events = [serialize_value(e) for e in instance.all_logs(result.run_id)]
    return "\n".join([serialize_value(run), str(run.run_config), str(run.tags), *events])


def test_a_step_posts_with_the_connectors_token_never_shown_to_dagster(org, user, slack, caplog):
    make_connector(org)
    workflow = make_published_workflow(org, user, slack_definition(text="deployed"), slug="notify")
    result, execution, instance = _execute(workflow)
    assert result.success
    assert [m["text"] for m in slack.messages_in("#bugs")] == ["deployed"]
    assert slack.requests[-1]["method"] == "chat.postMessage"
    with tenant_context(org.pk):
        step = steps_of(execution).get()
    assert step.status == "success" and TOKEN not in str(step.output)
    record = _dagster_record(result, instance)
    assert len(instance.all_logs(result.run_id)) > 5
    assert TOKEN not in record and TOKEN not in caplog.text


def test_without_a_connector_the_deployment_token_is_used(org, user, slack):
    workflow = make_published_workflow(org, user, slack_definition(None), slug="plain")
    result, execution, _ = _execute(workflow)
    assert not result.success  # the fake only knows the connector's token
    with tenant_context(org.pk):
        step = steps_of(execution).get()
    assert "SLACK_BOT_TOKEN" in step.error and "invalid_auth" in step.error


def test_a_refused_connector_token_fails_without_showing_it(org, user, slack, caplog):
    connector = make_connector(org)
    workflow = make_published_workflow(org, user, slack_definition(), slug="notify")
    with tenant_context(org.pk):
        connector_services.connector_update(
            connector=Connector.objects.get(pk=connector.pk),
            credentials={"bot_token": "xoxb-revoked-9c1e5b2d"},
        )
    result, execution, instance = _execute(workflow)
    assert not result.success
    with tenant_context(org.pk):
        step = steps_of(execution).get()
    assert "connector 'support-slack'" in step.error and "invalid_auth" in step.error
    record = _dagster_record(result, instance)
    for secret in (TOKEN, "xoxb-revoked-9c1e5b2d"):
        assert secret not in record and secret not in step.error and secret not in caplog.text


def test_a_connector_deleted_after_publishing_fails_the_step_clearly(org, user, slack):
    connector = make_connector(org)
    workflow = make_published_workflow(org, user, slack_definition(), slug="notify")
    with tenant_context(org.pk):
        Connector.objects.filter(pk=connector.pk).delete()  # bypassing the in-use check
    result, execution, _ = _execute(workflow)
    assert not result.success
    with tenant_context(org.pk):
        step = steps_of(execution).get()
    assert "connector 'support-slack' not found" in step.error
