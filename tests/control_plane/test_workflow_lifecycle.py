"""The definition language's JSON Schema; status, owner and department; list filters;
versions, rollback and diff; import and export."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest
import yaml
from rest_framework.test import APIClient

from control_plane.core.tenancy import tenant_context
from control_plane.organizations import services as organization_services
from control_plane.organizations.models import Department, OrganizationMember
from control_plane.workflows.models import WorkflowVersion
from control_plane.workflows.selectors import published_job_index
from tests.conftest import bearer_token
from tests.factories import THREE_STEPS, definition, make_member

pytestmark = pytest.mark.django_db


def _error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    if code:
        assert error["code"] == code
    return error


def _create(api, slug="flow", definition_=THREE_STEPS, **extra) -> dict:
    body = {"name": slug.title(), "slug": slug, "definition": definition_, **extra}
    response = api.post("/api/v1/workflows", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def _publish(api, workflow_id: int, changelog: str = "") -> dict:
    response = api.post(f"/api/v1/workflows/{workflow_id}/publish", {"changelog": changelog})
    assert response.status_code == 201, response.content
    return response.json()


class TestSchema:
    def test_schema_validates_what_publishing_accepts(self, api):
        response = api.get("/api/v1/workflows/schema")
        assert response.status_code == 200
        schema = response.json()
        jsonschema.Draft202012Validator.check_schema(schema)
        validator = jsonschema.Draft202012Validator(schema)
        assert not list(validator.iter_errors(THREE_STEPS))
        assert set(schema["x-step-types"]) >= {"transform.template", "http.request"}
        step_enum = schema["$defs"]["StepSpec"]["properties"]["type"]["enum"]
        assert "http.request" in step_enum

    @pytest.mark.parametrize(
        ("mutate", "fragment"),
        [
            (lambda d: d["steps"][0].update(type="nope.nothing"), "nope.nothing"),
            (lambda d: d["steps"][0]["config"].update(extra=1), "extra"),
            (lambda d: d["steps"][0].update(retry={"max_attempts": 99}), "99"),
            (lambda d: d["steps"][0].update(timeout_seconds=-1), "-1"),
            (lambda d: d["inputs"]["name"].update(type="date"), "date"),
            (lambda d: d.update(steps=[]), "[]"),
        ],
    )
    def test_schema_rejects_what_publishing_rejects(self, api, mutate, fragment):
        schema = api.get("/api/v1/workflows/schema").json()
        broken = copy.deepcopy(THREE_STEPS)
        mutate(broken)
        messages = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(broken)]
        assert messages and any(fragment in m for m in messages), messages

    def test_schema_needs_a_signed_in_user(self):
        assert APIClient().get("/api/v1/workflows/schema").status_code == 401


class TestStatusOwnerDepartment:
    def test_pause_resume_archive(self, api, published):
        url = f"/api/v1/workflows/{published.pk}"
        assert api.patch(url, {"status": "paused"}, format="json").json()["status"] == "paused"
        assert "acme__triage" not in published_job_index()
        run = api.post(f"{url}/run", {"inputs": {}}, format="json")
        _error(run, 409, "not_active")
        assert api.patch(url, {"status": "active"}, format="json").json()["status"] == "active"
        assert "acme__triage" in published_job_index()
        assert api.patch(url, {"status": "archived"}, format="json").json()["status"] == "archived"
        _error(api.patch(url, {"status": "active"}, format="json"), 409, "invalid_status_change")

    def test_a_draft_cannot_become_active_without_publishing(self, api):
        workflow = _create(api)
        response = api.patch(f"/api/v1/workflows/{workflow['id']}", {"status": "active"})
        assert "status" in _error(response, 409)["fields"]

    def test_status_needs_workflow_publish(self, org, published):
        with tenant_context(org.pk):
            organization_services.role_create(
                organization=org,
                key="drafter",
                name="Drafter",
                permissions=["workflow.read", "workflow.edit"],
                description="",
            )
        drafter = make_member(org, "dan@acme.test", role="drafter")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {bearer_token(drafter)}")
        url = f"/api/v1/workflows/{published.pk}"
        _error(client.patch(url, {"status": "paused"}, format="json"), 403)
        assert client.patch(url, {"description": "ok"}, format="json").status_code == 200

    def test_owner_and_department(self, api, org, user, published):
        colleague = make_member(org, "carol@acme.test", role="editor")
        with tenant_context(org.pk):
            ops = Department.objects.create(organization=org, name="Ops")
        url = f"/api/v1/workflows/{published.pk}"
        body = api.patch(url, {"owner": colleague.pk, "department": ops.pk}, format="json").json()
        assert body["owner"]["email"] == "carol@acme.test"
        assert body["department"] == {"id": ops.pk, "name": "Ops"}
        assert api.get(f"/api/v1/workflows?owner={colleague.pk}").json()["count"] == 1
        assert api.get(f"/api/v1/workflows?department={ops.pk}").json()["count"] == 1
        assert api.get(f"/api/v1/workflows?owner={user.pk}").json()["count"] == 0

    def test_owner_must_be_a_member_and_department_must_exist(self, api, other_org, published):
        stranger = make_member(other_org, "eve@globex.test")
        with tenant_context(other_org.pk):
            theirs = Department.objects.create(organization=other_org, name="Theirs")
        url = f"/api/v1/workflows/{published.pk}"
        assert (
            "owner" in _error(api.patch(url, {"owner": stranger.pk}, format="json"), 400)["fields"]
        )
        response = api.patch(url, {"department": theirs.pk}, format="json")
        assert "department" in _error(response, 400)["fields"]

    def test_the_creator_owns_a_new_workflow(self, api, user):
        assert _create(api)["owner"]["id"] == user.pk


class TestListFilters:
    def test_search_and_status(self, api):
        _create(api, "invoice-sync", description="pushes invoices")
        _create(api, "lead-router")
        found = api.get("/api/v1/workflows?search=invoice").json()
        assert [w["slug"] for w in found["results"]] == ["invoice-sync"]
        found = api.get("/api/v1/workflows?search=PUSHES").json()
        assert [w["slug"] for w in found["results"]] == ["invoice-sync"]
        assert api.get("/api/v1/workflows?status=active").json()["count"] == 0
        assert api.get("/api/v1/workflows?status=draft").json()["count"] == 2
        assert api.get("/api/v1/workflows?owner=abc").json()["count"] == 0


class TestVersions:
    def test_version_detail_records_who_published(self, api, user, published):
        body = api.get(f"/api/v1/workflows/{published.pk}/versions/1").json()
        assert body["number"] == 1 and body["published_by"] == user.email
        _error(api.get(f"/api/v1/workflows/{published.pk}/versions/9"), 404)

    def test_rollback_publishes_the_old_definition_as_the_next_version(self, api, published):
        url = f"/api/v1/workflows/{published.pk}"
        changed = definition(inputs={"name": {"type": "string", "default": "mars"}})
        api.patch(url, {"definition": changed}, format="json")
        _publish(api, published.pk)
        rolled = api.post(f"{url}/versions/1/rollback")
        assert rolled.status_code == 201
        body = rolled.json()
        assert body["number"] == 3 and body["changelog"] == "roll back to version 1"
        versions = WorkflowVersion.objects.unscoped().filter(workflow=published)
        v1, v3 = versions.get(number=1), versions.get(number=3)
        assert v3.definition == v1.definition and v3.content_hash == v1.content_hash
        assert api.get(url).json()["definition"] == v1.definition
        _error(api.post(f"{url}/versions/3/rollback"), 409, "unchanged")
        _error(api.post(f"{url}/versions/42/rollback"), 404)

    def test_rollback_needs_workflow_publish(self, org, published):
        operator = make_member(org, "olga@acme.test", role="operator")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {bearer_token(operator)}")
        _error(client.post(f"/api/v1/workflows/{published.pk}/versions/1/rollback"), 403)


class TestDiff:
    def test_steps_added_removed_changed_and_moved(self, api, published):
        url = f"/api/v1/workflows/{published.pk}"
        new = copy.deepcopy(THREE_STEPS)
        new["steps"][1]["config"]["template"] = "{{ steps.greet.output.result | lower }}"
        new["steps"] = [new["steps"][0], new["steps"][1]]  # "length" removed
        new["steps"].insert(
            0, {"id": "intro", "type": "transform.template", "config": {"template": "hello"}}
        )
        new["inputs"]["name"]["default"] = "mars"
        new["outputs"] = {"loud": "{{ steps.shout.output.result }}"}
        api.patch(url, {"definition": new}, format="json")
        diff = api.get(f"{url}/diff").json()  # latest version -> draft
        assert diff["steps_added"] == ["intro"] and diff["steps_removed"] == ["length"]
        changed = {c["id"]: c for c in diff["steps_changed"]}
        assert set(changed["shout"]["fields"]) == {"config"}
        assert changed["greet"] == {"id": "greet", "fields": {}, "moved": True}
        assert diff["inputs"]["name"]["to"]["default"] == "mars"
        assert diff["outputs"] == {"loud": {"from": None, "to": "{{ steps.shout.output.result }}"}}
        assert diff["identical"] is False
        _publish(api, published.pk)
        between = api.get(f"{url}/diff?from=1&to=2").json()
        assert between["steps_added"] == ["intro"]
        assert api.get(f"{url}/diff?from=2&to=draft").json()["identical"] is True

    def test_bad_references(self, api, published):
        url = f"/api/v1/workflows/{published.pk}/diff"
        _error(api.get(f"{url}?from=abc"), 400)
        _error(api.get(f"{url}?from=7"), 404)


class TestImportExport:
    @pytest.mark.parametrize("kind", ["json", "yaml"])
    def test_export_then_import_round_trips_exactly(self, api, published, kind):
        first = api.get(f"/api/v1/workflows/{published.pk}/export?format={kind}")
        assert first.status_code == 200
        assert first["Content-Disposition"] == f'attachment; filename="triage.flowpilot.{kind}"'
        text = first.content.decode()
        document = json.loads(text) if kind == "json" else yaml.safe_load(text)
        assert document["definition"] == THREE_STEPS
        content_type = "application/json" if kind == "json" else "application/yaml"
        imported = api.generic(
            "POST", "/api/v1/workflows/import?slug=triage-copy", text, content_type=content_type
        )
        assert imported.status_code == 201, imported.content
        copy_id = imported.json()["id"]
        second = api.get(f"/api/v1/workflows/{copy_id}/export?format={kind}").content.decode()
        parse = json.loads if kind == "json" else yaml.safe_load
        assert parse(second) == {**document, "slug": "triage-copy"}
        assert list(parse(second)) == list(document)  # the same layout, key for key
        assert second == text.replace("triage", "triage-copy", 1)  # byte for byte, but the slug

    def test_import_keeps_the_slug_and_refuses_a_taken_one(self, api, published):
        document = api.get(f"/api/v1/workflows/{published.pk}/export").json()
        _error(api.post("/api/v1/workflows/import", document, format="json"), 409)
        document["slug"] = "fresh"
        assert api.post("/api/v1/workflows/import", document, format="json").json()["slug"] == (
            "fresh"
        )

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"name": "x", "definition": {}}, "flowpilot_workflow"),
            ({"flowpilot_workflow": 1, "definition": {}}, "name"),
            ({"flowpilot_workflow": 1, "name": "x", "definition": []}, "definition"),
            ({"flowpilot_workflow": 1, "name": "x", "surprise": True}, "surprise"),
            ([1, 2], "flowpilot_workflow"),
        ],
    )
    def test_invalid_documents_are_400_by_field(self, api, body, field):
        response = api.post("/api/v1/workflows/import", body, format="json")
        assert field in _error(response, 400, "invalid_import")["fields"]

    def test_broken_yaml_is_a_400(self, api):
        response = api.generic(
            "POST", "/api/v1/workflows/import", "name: [unclosed", content_type="application/yaml"
        )
        _error(response, 400, "parse_error")

    def test_an_imported_invalid_definition_is_a_draft_with_problems(self, api):
        document = {
            "flowpilot_workflow": 1,
            "name": "Half done",
            "definition": {"steps": [{"id": "a", "type": "nope"}]},
        }
        created = api.post("/api/v1/workflows/import", document, format="json").json()
        detail = api.get(f"/api/v1/workflows/{created['id']}").json()
        assert detail["status"] == "draft" and detail["problems"][0]["path"] == "steps[0].type"

    def test_export_format_is_checked(self, api, published):
        _error(api.get(f"/api/v1/workflows/{published.pk}/export?format=xml"), 400)

    def test_import_needs_workflow_edit(self, org, published, api):
        viewer = make_member(org, "vic@acme.test", role="viewer")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {bearer_token(viewer)}")
        document = api.get(f"/api/v1/workflows/{published.pk}/export").json()
        document["slug"] = "viewer-copy"
        _error(client.post("/api/v1/workflows/import", document, format="json"), 403)
        assert client.get(f"/api/v1/workflows/{published.pk}/export").status_code == 200
        assert OrganizationMember.objects.unscoped().filter(user=viewer).exists()


def test_a_new_draft_may_be_empty(api):
    """Drafts may be incomplete: a workflow starts with no definition at all."""
    response = api.post("/api/v1/workflows", {"name": "Blank"}, format="json")
    assert response.status_code == 201, response.content
    detail = api.get(f"/api/v1/workflows/{response.json()['id']}").json()
    assert detail["definition"] == {} and detail["problems"]
