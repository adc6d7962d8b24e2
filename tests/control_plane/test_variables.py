"""Workflow variables: the API (both scopes, types, secrets, other tenants), `vars` checked at
publish, and runs that read them, secrets kept out of Dagster."""

from __future__ import annotations

import pytest
from django.db import connection
from rest_framework.test import APIClient

from control_plane.core.tenancy import tenant_context
from control_plane.workflows import variables as variable_services
from control_plane.workflows.models import WorkflowVariable
from tests.conftest import bearer_token
from tests.factories import make_member, make_published_workflow
from tests.variable_support import SECRET, make_variable, template_definition

pytestmark = pytest.mark.django_db

VARS = "/api/v1/variables"


def wf_vars(workflow_id: int) -> str:
    return f"/api/v1/workflows/{workflow_id}/variables"


def assert_error(response, status: int, code: str | None = None) -> dict:
    """Every refusal in the one JSON error shape."""
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]


@pytest.fixture
def draft(org, user):
    from control_plane.workflows import services

    with tenant_context(org.pk):
        return services.workflow_create(
            organization=org,
            created_by=user,
            name="Draft",
            slug="draft",
            definition=template_definition("{{ vars.greeting }}"),
        )


# CRUD ---------------------------------------------------------------------------------------


def test_organization_variable_crud(api):
    created = api.post(
        VARS,
        {"name": "region", "type": "string", "value": "eu-west-1", "description": "AWS"},
        format="json",
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert {k: body[k] for k in ("name", "type", "value", "is_secret", "has_value")} == {
        "name": "region",
        "type": "string",
        "value": "eu-west-1",
        "is_secret": False,
        "has_value": True,
    }
    assert body["workflow"] is None and body["description"] == "AWS"
    api.post(VARS, {"name": "retries", "type": "integer", "value": 3}, format="json")

    listing = api.get(VARS).json()
    assert listing["count"] == 2 and [v["name"] for v in listing["results"]] == [
        "region",
        "retries",
    ]
    assert [v["name"] for v in api.get(VARS, {"search": "REG"}).json()["results"]] == ["region"]
    page = api.get(VARS, {"page_size": 1}).json()
    assert page["count"] == 2 and len(page["results"]) == 1 and page["next"]

    detail = f"{VARS}/{body['id']}"
    assert api.get(detail).json()["value"] == "eu-west-1"
    patched = api.patch(detail, {"value": "us-east-2", "description": ""}, format="json")
    assert patched.status_code == 200 and patched.json()["value"] == "us-east-2"
    assert patched.json()["description"] == ""
    assert api.delete(detail).status_code == 204
    assert_error(api.get(detail), 404, "not_found")
    assert api.get(VARS).json()["count"] == 1


def test_workflow_variables_are_their_own_scope(api, org, user, published, draft):
    created = api.post(
        wf_vars(published.pk), {"name": "channel", "type": "string", "value": "#ops"}, format="json"
    )
    assert created.status_code == 201, created.json()
    own = created.json()
    assert own["workflow"] == published.pk
    org_wide = api.post(VARS, {"name": "channel", "type": "string", "value": "#all"}, format="json")
    assert org_wide.status_code == 201  # the same name in another scope is fine
    org_wide = org_wide.json()

    assert [v["value"] for v in api.get(wf_vars(published.pk)).json()["results"]] == ["#ops"]
    assert [v["value"] for v in api.get(VARS).json()["results"]] == ["#all"]
    assert api.get(wf_vars(draft.pk)).json()["count"] == 0

    # A variable is found only under the URL of its own scope.
    assert api.get(f"{wf_vars(published.pk)}/{own['id']}").status_code == 200
    assert_error(api.get(f"{VARS}/{own['id']}"), 404)
    assert_error(api.get(f"{wf_vars(published.pk)}/{org_wide['id']}"), 404)
    assert_error(api.get(f"{wf_vars(draft.pk)}/{own['id']}"), 404)
    assert_error(api.delete(f"{wf_vars(draft.pk)}/{own['id']}"), 404)
    assert_error(api.get(wf_vars(999_999)), 404)

    patched = api.patch(
        f"{wf_vars(published.pk)}/{own['id']}", {"value": "#oncall"}, format="json"
    ).json()
    assert patched["value"] == "#oncall" and patched["workflow"] == published.pk
    assert api.delete(f"{wf_vars(published.pk)}/{own['id']}").status_code == 204
    assert api.get(wf_vars(published.pk)).json()["count"] == 0


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        ("string", "text"),
        ("string", ""),
        ("integer", 42),
        ("integer", -(2**40)),
        ("number", 1.5),
        ("number", 7),
        ("boolean", False),
        ("json", {"a": [1, None, "x"]}),
        ("json", [1, 2]),
        ("json", None),
        ("json", "plain string"),
    ],
)
def test_values_of_each_type(api, type_, value):
    response = api.post(VARS, {"name": "v", "type": type_, "value": value}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["value"] == value and response.json()["type"] == type_


@pytest.mark.parametrize(
    ("type_", "value", "message"),
    [
        ("string", 12, "expected string, got integer"),
        ("string", None, "expected string, got null"),
        ("integer", True, "expected integer, got boolean"),
        ("integer", 1.5, "expected integer, got number"),
        ("integer", "3", "expected integer, got string"),
        ("number", "1.5", "expected number, got string"),
        ("number", False, "expected number, got boolean"),
        ("boolean", 0, "expected boolean, got integer"),
        ("boolean", "true", "expected boolean, got string"),
        ("boolean", [], "expected boolean, got array"),
    ],
)
def test_value_must_match_the_type(api, type_, value, message):
    response = api.post(VARS, {"name": "v", "type": type_, "value": value}, format="json")
    error = assert_error(response, 400)
    assert error["fields"] == {"value": [message]}


def test_type_change_checks_the_existing_value(api):
    created = api.post(VARS, {"name": "n", "type": "string", "value": "x"}, format="json").json()
    error = assert_error(
        api.patch(f"{VARS}/{created['id']}", {"type": "integer"}, format="json"), 400
    )
    assert error["fields"] == {"value": ["expected integer, got string"]}
    ok = api.patch(f"{VARS}/{created['id']}", {"type": "integer", "value": 5}, format="json")
    assert ok.status_code == 200 and ok.json()["value"] == 5


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "1st", "type": "string", "value": "x"}, "name"),
        ({"name": "has-dash", "type": "string", "value": "x"}, "name"),
        ({"name": "a" * 64, "type": "string", "value": "x"}, "name"),
        ({"name": "__class__", "type": "string", "value": "x"}, "name"),
        ({"name": "", "type": "string", "value": "x"}, "name"),
        ({"name": "ok", "type": "float", "value": 1.0}, "type"),
        ({"name": "ok", "type": "string"}, "value"),
        ({"name": "ok", "type": "string", "value": "x" * (64 * 1024)}, "value"),
        ({"name": "ok", "type": "json", "value": {"k": "x" * (64 * 1024)}}, "value"),
        ({"name": "ok", "type": "string", "value": "x", "description": "d" * 501}, "description"),
    ],
    ids=[
        "digit-first",
        "dash",
        "too-long",
        "reserved",
        "empty",
        "unknown-type",
        "missing-value",
        "too-large",
        "too-large-json",
        "long-description",
    ],
)
def test_invalid_input_names_the_field(api, body, field):
    error = assert_error(api.post(VARS, body, format="json"), 400)
    assert field in error["fields"], error


def test_largest_value_is_accepted(api):
    value = "x" * (64 * 1024 - 2)  # two quotes make it exactly 64 KiB of JSON
    assert (
        api.post(VARS, {"name": "big", "type": "string", "value": value}, format="json").status_code
        == 201
    )


def test_duplicate_names_conflict(api, published):
    body = {"name": "token", "type": "string", "value": "a"}
    assert api.post(VARS, body, format="json").status_code == 201
    error = assert_error(api.post(VARS, body, format="json"), 409, "conflict")
    assert error["fields"] == {"name": ["already taken"]} and "token" in error["message"]

    assert api.post(wf_vars(published.pk), body, format="json").status_code == 201
    assert_error(api.post(wf_vars(published.pk), body, format="json"), 409, "conflict")

    other = api.post(VARS, {**body, "name": "other"}, format="json").json()
    renamed = api.patch(f"{VARS}/{other['id']}", {"name": "token"}, format="json")
    assert_error(renamed, 409, "conflict")
    assert api.get(f"{VARS}/{other['id']}").json()["name"] == "other"


# Secrets -----------------------------------------------------------------------------------


def test_secret_is_never_returned_and_is_encrypted_at_rest(api, published):
    created = api.post(
        VARS,
        {"name": "api_key", "type": "string", "value": SECRET, "is_secret": True},
        format="json",
    )
    assert created.status_code == 201
    body = created.json()
    assert body["value"] is None and body["is_secret"] is True and body["has_value"] is True
    wf_secret = api.post(
        wf_vars(published.pk),
        {"name": "conf", "type": "json", "value": {"password": SECRET}, "is_secret": True},
        format="json",
    ).json()
    detail = f"{VARS}/{body['id']}"
    responses = [
        created,
        api.get(VARS),
        api.get(detail),
        api.get(wf_vars(published.pk)),
        api.get(f"{wf_vars(published.pk)}/{wf_secret['id']}"),
        api.patch(detail, {"description": "rotated monthly"}, format="json"),
        api.patch(detail, {"value": SECRET + "-v2"}, format="json"),
        api.patch(detail, {"type": "string"}, format="json"),
    ]
    for response in responses:
        assert response.status_code in (200, 201), response.content
        assert SECRET not in response.content.decode()
    assert api.get(detail).json()["value"] is None

    # The column holds a Fernet token, not the value.
    table = WorkflowVariable._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT value, secret_value FROM {table} WHERE is_secret")  # noqa: S608
        rows = cursor.fetchall()
    assert len(rows) == 2
    for value, secret_value in rows:
        assert value is None and secret_value.startswith("gAAAA") and SECRET not in secret_value
    # ... which decrypts to the latest value, for runs only.
    with tenant_context(published.organization_id):
        values, secret = variable_services.run_variables(
            organization_id=published.organization_id, workflow_id=published.pk
        )
    assert values == {"api_key": SECRET + "-v2", "conf": {"password": SECRET}}
    assert secret == {"api_key", "conf"}


def test_secret_cannot_be_revealed_by_making_it_public(api):
    body = {"name": "api_key", "type": "string", "value": SECRET, "is_secret": True}
    detail = f"{VARS}/{api.post(VARS, body, format='json').json()['id']}"
    error = assert_error(api.patch(detail, {"is_secret": False}, format="json"), 400)
    assert "value" in error["fields"] and SECRET not in str(error)
    assert api.get(detail).json()["is_secret"] is True
    public = api.patch(detail, {"is_secret": False, "value": "harmless"}, format="json").json()
    assert public["is_secret"] is False and public["value"] == "harmless"
    secret_again = api.patch(detail, {"is_secret": True}, format="json").json()
    assert secret_again["value"] is None and secret_again["is_secret"] is True


# Permissions and other tenants -------------------------------------------------------------


def test_viewer_reads_but_cannot_write(api, org, published):
    created = api.post(VARS, {"name": "region", "type": "string", "value": "eu"}, format="json")
    variable_id = created.json()["id"]
    viewer = APIClient()
    viewer.credentials(
        HTTP_AUTHORIZATION=f"Bearer {bearer_token(make_member(org, 'vic@acme.test', 'viewer'))}"
    )
    assert viewer.get(VARS).json()["count"] == 1
    assert viewer.get(f"{VARS}/{variable_id}").status_code == 200
    body = {"name": "x", "type": "string", "value": "y"}
    assert_error(viewer.post(VARS, body, format="json"), 403, "permission_denied")
    assert_error(viewer.post(wf_vars(published.pk), body, format="json"), 403)
    assert_error(viewer.patch(f"{VARS}/{variable_id}", {"value": "z"}, format="json"), 403)
    assert_error(viewer.delete(f"{VARS}/{variable_id}"), 403)
    assert api.get(f"{VARS}/{variable_id}").json()["value"] == "eu"


def test_other_organizations_variables_are_not_found(org, other_org, user, published, outsider_api):
    org_var = make_variable(org, "token", SECRET, is_secret=True)
    wf_var = make_variable(org, "channel", "#acme", workflow=published)
    globex_flow = make_published_workflow(
        other_org,
        make_member(other_org, "gina@globex.test"),
        template_definition("x"),
        slug="globex-flow",
    )
    attempts = []
    for path in (
        f"{VARS}/{org_var.pk}",
        f"{VARS}/{wf_var.pk}",
        f"{wf_vars(published.pk)}/{wf_var.pk}",
        f"{wf_vars(globex_flow.pk)}/{wf_var.pk}",
        f"{wf_vars(globex_flow.pk)}/{org_var.pk}",
        f"/api/v1/orgs/acme/variables/{org_var.pk}",
        f"/api/v1/orgs/globex/variables/{org_var.pk}",
        f"/api/v1/orgs/globex/workflows/{published.pk}/variables/{wf_var.pk}",
    ):
        attempts += [
            outsider_api.get(path),
            outsider_api.patch(path, {"value": "pwned"}, format="json"),
            outsider_api.delete(path),
        ]
    attempts += [
        outsider_api.get(wf_vars(published.pk)),
        outsider_api.post(
            wf_vars(published.pk), {"name": "x", "type": "string", "value": "y"}, format="json"
        ),
    ]
    for response in attempts:
        assert_error(response, 404)
        assert SECRET not in response.content.decode() and "#acme" not in response.content.decode()
    assert outsider_api.get(VARS).json()["count"] == 0
    with tenant_context(org.pk):
        assert WorkflowVariable.objects.get(pk=wf_var.pk).value == "#acme"
        assert WorkflowVariable.objects.count() == 2


def test_workflow_variable_of_another_organization_cannot_be_created_by_service(
    org, other_org, published
):
    from control_plane.core.errors import NotFoundError

    with tenant_context(other_org.pk), pytest.raises(NotFoundError):
        variable_services.variable_create(
            organization=other_org,
            created_by=None,
            workflow=published,
            name="x",
            value="y",
        )


# Validation at publish ----------------------------------------------------------------------


def test_publish_needs_the_variables_it_reads(api, draft):
    publish = f"/api/v1/workflows/{draft.pk}/publish"
    error = assert_error(api.post(publish, {}, format="json"), 400, "invalid_definition")
    assert error["fields"] == {
        "definition.steps[0].config.template": [
            "step 'say': unknown variable 'greeting': define it for this workflow or the "
            "organization"
        ]
    }
    assert "step 'say'" in error["message"] and "steps[0].config.template" in error["message"]
    assert error["details"][0]["step"] == "say"

    # Drafts may stay invalid: the detail shows the problem, the draft saves.
    problems = api.get(f"/api/v1/workflows/{draft.pk}").json()["problems"]
    assert [p["path"] for p in problems] == ["steps[0].config.template"]

    # A variable of another workflow does not count; the workflow's own or the org's does.
    other = api.post(
        "/api/v1/workflows",
        {"name": "Other", "definition": template_definition("x")},
        format="json",
    ).json()
    api.post(
        wf_vars(other["id"]), {"name": "greeting", "type": "string", "value": "hi"}, format="json"
    )
    assert_error(api.post(publish, {}, format="json"), 400)
    api.post(
        wf_vars(draft.pk), {"name": "greeting", "type": "string", "value": "hi"}, format="json"
    )
    assert api.post(publish, {}, format="json").status_code == 201
    assert api.get(f"/api/v1/workflows/{draft.pk}").json()["problems"] == []


def test_publish_succeeds_once_the_organization_variable_exists(api, draft):
    publish = f"/api/v1/workflows/{draft.pk}/publish"
    assert_error(api.post(publish, {}, format="json"), 400)
    api.post(VARS, {"name": "greeting", "type": "string", "value": "hi"}, format="json")
    assert api.post(publish, {}, format="json").status_code == 201


def test_validate_endpoint_checks_variables(api, draft):
    definition = {
        "steps": [
            {"id": "a", "type": "transform.template", "config": {"template": "{{ vars.org_v }}"}},
            {
                "id": "b",
                "type": "transform.template",
                "when": "vars.own_v",
                "config": {"template": "x"},
            },
        ]
    }
    validate = "/api/v1/workflows/validate"
    body = api.post(validate, {"definition": definition}, format="json").json()
    assert body["valid"] is False
    assert {(e["path"], e["step"]) for e in body["errors"]} == {
        ("steps[0].config.template", "a"),
        ("steps[1].when", "b"),
    }
    api.post(VARS, {"name": "org_v", "type": "integer", "value": 1}, format="json")
    api.post(wf_vars(draft.pk), {"name": "own_v", "type": "boolean", "value": True}, format="json")
    body = api.post(validate, {"definition": definition}, format="json").json()
    assert [e["message"] for e in body["errors"]] == [
        "unknown variable 'own_v': define it for this workflow or the organization"
    ]
    body = api.post(
        validate, {"definition": definition, "workflow_id": draft.pk}, format="json"
    ).json()
    assert body == {"valid": True, "errors": []}
    assert_error(
        api.post(validate, {"definition": definition, "workflow_id": 999_999}, format="json"), 404
    )


def test_unreachable_step_is_refused_at_publish(api):
    definition = {
        "steps": [
            {"id": "a", "type": "transform.template", "config": {"template": "x"}},
            {
                "id": "b",
                "type": "transform.template",
                "when": "{{ false }}",
                "after": ["a"],
                "config": {"template": "x"},
            },
            {"id": "c", "type": "transform.template", "after": ["b"], "config": {"template": "x"}},
        ]
    }
    created = api.post(
        "/api/v1/workflows", {"name": "Dead", "definition": definition}, format="json"
    )
    error = assert_error(api.post(f"/api/v1/workflows/{created.json()['id']}/publish"), 400)
    assert set(error["fields"]) == {"definition.steps[1].when", "definition.steps[2].after"}
