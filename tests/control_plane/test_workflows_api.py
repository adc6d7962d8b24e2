"""Workflows and executions over HTTP: the happy path, every validation error, other tenants."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from rest_framework.test import APIClient

from control_plane.executions.models import TriggerEvent, WorkflowExecution
from control_plane.workflows.models import WorkflowVersion
from tests.factories import definition, run_workflow

pytestmark = pytest.mark.django_db


def create(api, definition_=None, name="Ticket triage"):
    return api.post(
        "/api/v1/workflows",
        {"name": name, "definition": definition_ or definition()},
        format="json",
    )


def test_create_publish_run_and_read_execution(api):
    created = create(api)
    assert created.status_code == 201, created.json()
    workflow_id = created.json()["id"]
    assert created.json()["slug"] == "ticket-triage" and created.json()["status"] == "draft"

    published = api.post(
        f"/api/v1/workflows/{workflow_id}/publish", {"changelog": "first"}, format="json"
    )
    assert published.status_code == 201
    assert published.json()["number"] == 1 and len(published.json()["content_hash"]) == 64

    run = api.post(
        f"/api/v1/workflows/{workflow_id}/run", {"inputs": {"name": "ada"}}, format="json"
    )
    assert run.status_code == 202
    body = run.json()
    assert body["status"] == "queued" and body["inputs"] == {"name": "ada"} and body["version"] == 1
    event = TriggerEvent.objects.unscoped().get(pk=body["trigger_event"])
    assert event.status == "pending" and event.kind == "api"

    detail = api.get(f"/api/v1/executions/{body['id']}")
    assert detail.status_code == 200 and detail.json()["steps"] == []
    listing = api.get("/api/v1/executions")
    assert listing.json()["count"] == 1 and listing.json()["results"][0]["id"] == body["id"]


def test_execution_detail_shows_steps(api, published):
    from control_plane.core.tenancy import tenant_context
    from control_plane.executions.services import step_finished

    execution = run_workflow(published)
    with tenant_context(published.organization_id):
        step_finished(
            execution_id=execution.pk,
            step_id="greet",
            step_type="transform.template",
            position=0,
            status="success",
            output={"result": "Hi"},
            organization_id=published.organization_id,
        )
    steps = api.get(f"/api/v1/executions/{execution.pk}").json()["steps"]
    assert steps == [
        {**steps[0], "step_id": "greet", "status": "success", "output": {"result": "Hi"}}
    ]


@pytest.mark.parametrize(
    ("mutate", "field", "step"),
    [
        (lambda s: s[1].update(type="nope.nothing"), "definition.steps[1].type", "shout"),
        (lambda s: s[2].update(id="greet"), "definition.steps[2].id", "greet"),
        (lambda s: s[1].update(after=["ghost"]), "definition.steps[1].after[0]", "shout"),
        (lambda s: s[0].update(after=["shout"]), None, None),
    ],
    ids=["unknown-type", "duplicate-id", "missing-reference", "cycle"],
)
def test_publish_rejects_invalid_definitions_naming_the_step(api, mutate, field, step):
    raw = definition()
    mutate(raw["steps"])
    workflow_id = create(api, raw).json()["id"]
    response = api.post(f"/api/v1/workflows/{workflow_id}/publish", {}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_definition"
    if step:
        assert f"step '{step}'" in error["message"]
        assert any(d.get("step") == step for d in error["details"])
    else:  # a cycle names every step on it
        assert "cycle between steps" in error["message"]
        assert "greet" in error["message"] and "shout" in error["message"]
    if field:
        assert field in error["fields"]
    assert not WorkflowVersion.objects.unscoped().exists()


def test_draft_shows_problems_and_validate_endpoint(api):
    raw = definition()
    raw["steps"][1]["type"] = "nope"
    workflow = create(api, raw).json()
    problems = api.get(f"/api/v1/workflows/{workflow['id']}").json()["problems"]
    assert problems[0]["step"] == "shout"
    checked = api.post("/api/v1/workflows/validate", {"definition": raw}, format="json").json()
    assert checked["valid"] is False and checked["errors"][0]["path"] == "steps[1].type"
    assert api.post(
        "/api/v1/workflows/validate", {"definition": definition()}, format="json"
    ).json() == {
        "valid": True,
        "errors": [],
    }


def test_publishing_the_same_definition_twice_is_a_conflict(api, published):
    response = api.post(f"/api/v1/workflows/{published.pk}/publish", {}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "unchanged"


def test_versions_are_immutable_in_the_database(published):
    version = WorkflowVersion.objects.unscoped().get(workflow=published)
    version.changelog = "rewritten"
    with pytest.raises(IntegrityError), transaction.atomic():
        version.save()


def test_run_rejects_bad_inputs_with_field_messages(api, published):
    response = api.post(
        f"/api/v1/workflows/{published.pk}/run", {"inputs": {"name": 5, "zzz": 1}}, format="json"
    )
    assert response.status_code == 400
    fields = response.json()["error"]["fields"]
    assert fields["inputs.name"] == ["expected string, got int"]
    assert "unknown input" in fields["inputs.zzz"][0]
    assert (
        not WorkflowExecution.objects.unscoped().exists()
        and not TriggerEvent.objects.unscoped().exists()
    )


def test_run_unpublished_workflow_is_a_conflict(api):
    workflow_id = create(api).json()["id"]
    response = api.post(f"/api/v1/workflows/{workflow_id}/run", {}, format="json")
    assert response.status_code == 409 and response.json()["error"]["code"] == "not_published"


def test_duplicate_slug_is_a_conflict(api):
    assert create(api).status_code == 201
    response = create(api)
    assert response.status_code == 409
    assert response.json()["error"]["fields"] == {"slug": ["already taken"]}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "ok", "slug": "no spaces"}, "slug"),
    ],
)
def test_create_validation_errors(api, body, field):
    response = api.post("/api/v1/workflows", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


def test_malformed_json_is_a_400_not_a_500(api):
    response = api.post("/api/v1/workflows", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_update_draft(api, published):
    response = api.patch(f"/api/v1/workflows/{published.pk}", {"description": "new"}, format="json")
    assert response.status_code == 200 and response.json()["description"] == "new"


def test_unauthenticated_is_401(published):
    response = APIClient().get("/api/v1/workflows")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


WORKFLOW_URLS = [
    ("get", "/api/v1/workflows/{id}"),
    ("patch", "/api/v1/workflows/{id}"),
    ("post", "/api/v1/workflows/{id}/publish"),
    ("get", "/api/v1/workflows/{id}/versions"),
    ("post", "/api/v1/workflows/{id}/run"),
]


@pytest.mark.parametrize(("method", "url"), WORKFLOW_URLS)
def test_other_tenant_gets_404_for_workflow_endpoints(outsider_api, published, method, url):
    response = getattr(outsider_api, method)(url.format(id=published.pk), {}, format="json")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_other_tenant_sees_nothing_in_lists_and_cannot_read_executions(
    api, outsider_api, published
):

    execution = run_workflow(published)
    assert outsider_api.get("/api/v1/workflows").json()["count"] == 0
    assert outsider_api.get("/api/v1/executions").json()["count"] == 0
    assert outsider_api.get(f"/api/v1/executions/{execution.pk}").status_code == 404
    assert api.get(f"/api/v1/executions/{execution.pk}").status_code == 200


def test_organization_header_for_a_foreign_org_is_404(api, other_org):
    response = api.get("/api/v1/workflows", HTTP_X_ORGANIZATION="globex")
    assert response.status_code == 404


def test_list_is_paginated(api):
    for i in range(3):
        create(api, name=f"Flow {i}")
    page = api.get("/api/v1/workflows?page_size=2").json()
    assert page["count"] == 3 and len(page["results"]) == 2 and page["next"]
