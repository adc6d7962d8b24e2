"""Workflow templates: the built-in gallery (each one instantiated, validated, rendered and run
end to end against local servers), placeholders, preview, instantiation, organization templates
over HTTP, permissions, and other organizations."""

from __future__ import annotations

import json

import pytest

from control_plane.core.tenancy import tenant_context
from control_plane.workflows import templates
from control_plane.workflows.models import Workflow, WorkflowTemplate
from tests.factories import make_member
from tests.template_support import client_for, instantiate, is_error

pytestmark = pytest.mark.django_db

BUILTIN = sorted(templates.builtin_templates())


# --- list, detail, preview ---------------------------------------------------------------------


def test_list_filter_search_and_paginate(api):
    everything = api.get("/api/v1/templates?page_size=100").json()
    assert everything["count"] == len(BUILTIN)
    first = everything["results"][0]
    assert set(first) >= {
        "slug",
        "name",
        "category",
        "description",
        "source",
        "placeholders",
        "required_connectors",
        "definition",
    }
    assert {r["source"] for r in everything["results"]} == {"builtin"}

    monitoring = api.get("/api/v1/templates?category=Monitoring").json()
    assert {r["slug"] for r in monitoring["results"]} == {"keyword-alert", "uptime-check"}
    found = api.get("/api/v1/templates", {"search": "meeting ATTENDED"}).json()
    assert [r["slug"] for r in found["results"]] == ["meeting-notes"]
    assert api.get("/api/v1/templates?search=zebra-crossing").json()["count"] == 0
    assert api.get("/api/v1/templates?source=organization").json()["count"] == 0

    page = api.get("/api/v1/templates?page_size=3").json()
    assert len(page["results"]) == 3 and page["next"]
    second = api.get(page["next"]).json()
    assert not {r["slug"] for r in second["results"]} & {r["slug"] for r in page["results"]}
    is_error(api.get("/api/v1/templates?source=elsewhere"), 400, "validation_error")


def test_detail_shows_placeholders_and_unknown_is_404(api):
    body = api.get("/api/v1/templates/uptime-check").json()
    assert body["source"] == "builtin" and body["created_at"] is None
    timeout = next(p for p in body["placeholders"] if p["name"] == "timeout_seconds")
    assert timeout == {
        "name": "timeout_seconds",
        "description": "How long to wait for the answer",
        "default": 10,
        "required": False,
    }
    assert body["definition"]["steps"][0]["config"]["timeout_seconds"] == "[[ timeout_seconds ]]"
    is_error(api.get("/api/v1/templates/no-such-template"), 404, "not_found")


def test_preview_fills_and_shows_errors_without_saving(api):
    path = "/api/v1/templates/uptime-check/preview"
    good = api.post(path, {"values": {"timeout_seconds": 3}}, format="json")
    assert good.status_code == 200
    assert good.json()["valid"] is True and good.json()["errors"] == []
    assert good.json()["definition"]["steps"][0]["config"]["timeout_seconds"] == 3
    assert good.json()["values"]["url"] == "https://www.example.com/healthz"

    bad = api.post(
        path,
        {"values": {"timeout_seconds": 0, "alert_emails": ["nobody"], "colour": "red"}},
        format="json",
    ).json()
    assert bad["valid"] is False
    paths = {e["path"] for e in bad["errors"]}
    assert paths == {
        "values.colour",
        "steps[0].config.timeout_seconds",
        "steps[2].config.to",
    }
    wrong_type = api.post(path, {"values": {"timeout_seconds": "soon"}}, format="json").json()
    assert wrong_type["errors"][0] == (
        {
            "path": "values.timeout_seconds",
            "message": "expected number (like the default), got string",
        }
    )
    is_error(api.post(path, {"values": ["not", "an", "object"]}, format="json"), 400)
    assert not Workflow.objects.unscoped().exists()


# --- instantiate -------------------------------------------------------------------------------


ORG_TEMPLATE = {
    "slug": "escalate",
    "name": "Escalate to a manager",
    "category": "support",
    "description": "Email the manager on duty",
    "placeholders": [
        {"name": "manager", "description": "Who gets escalations"},
        {"name": "prefix", "default": "ESCALATION"},
    ],
    "required_connectors": ["email"],
    "definition": {
        "inputs": {"issue": {"type": "string"}},
        "steps": [
            {
                "id": "mail",
                "type": "email.send",
                "config": {
                    "to": "[[ manager ]]",
                    "subject": "[[ prefix ]]: {{ inputs.issue }}",
                    "body": "{{ inputs.issue }}",
                },
            }
        ],
    },
}


def test_instantiate_needs_required_placeholders_and_refuses_unknown_ones(api):
    assert api.post("/api/v1/templates", ORG_TEMPLATE, format="json").status_code == 201
    error = is_error(instantiate(api, "escalate"), 400, "invalid_template_values")
    assert error["fields"] == {"values.manager": ["this placeholder is required"]}
    assert "values.manager" in error["message"]
    error = is_error(instantiate(api, "escalate", {"manager": "m@acme.test", "nope": 1}), 400)
    assert list(error["fields"]) == ["values.nope"]
    is_error(instantiate(api, "keyword-alert", {"keyword": ["not", "text"]}), 400)
    is_error(instantiate(api, "no-such-template"), 404, "not_found")
    assert not Workflow.objects.unscoped().exists()

    made = instantiate(
        api, "escalate", {"manager": "m@acme.test"}, name="Escalations", slug="escalations"
    )
    assert made.status_code == 201
    body = made.json()
    assert body["slug"] == "escalations" and body["description"] == "Email the manager on duty"
    step = body["definition"]["steps"][0]["config"]
    assert step["to"] == "m@acme.test" and step["subject"] == "ESCALATION: {{ inputs.issue }}"
    is_error(instantiate(api, "escalate", {"manager": "m@acme.test"}, slug="escalations"), 409)
    is_error(api.post("/api/v1/templates/escalate/instantiate", {}, format="json"), 400)


def test_a_bad_value_makes_a_draft_that_shows_its_problems(api):
    made = instantiate(api, "uptime-check", {"timeout_seconds": 9999})
    assert made.status_code == 201
    assert made.json()["problems"][0]["path"] == "steps[0].config.timeout_seconds"


# --- organization templates --------------------------------------------------------------------


def test_organization_template_crud(api, user):
    created = api.post("/api/v1/templates", ORG_TEMPLATE, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["source"] == "organization" and body["created_at"]
    assert body["placeholders"][0] == {
        "name": "manager",
        "description": "Who gets escalations",
        "default": None,
        "required": True,
    }
    record = WorkflowTemplate.objects.unscoped().get(slug="escalate")
    assert record.created_by == user

    listed = api.get("/api/v1/templates?source=organization").json()
    assert [r["slug"] for r in listed["results"]] == ["escalate"]
    assert api.get("/api/v1/templates").json()["count"] == len(BUILTIN) + 1
    assert api.get("/api/v1/templates?search=escalate").json()["results"][0]["slug"] == "escalate"

    changed = api.patch(
        "/api/v1/templates/escalate",
        {"name": "Escalate", "placeholders": [*ORG_TEMPLATE["placeholders"], {"name": "extra"}]},
        format="json",
    )
    assert changed.status_code == 200, changed.json()
    assert changed.json()["name"] == "Escalate" and len(changed.json()["placeholders"]) == 3

    definition = json.loads(json.dumps(ORG_TEMPLATE["definition"]))
    definition["steps"][0]["config"]["body"] = "[[ undeclared ]]"
    error = is_error(
        api.patch("/api/v1/templates/escalate", {"definition": definition}, format="json"),
        400,
        "invalid_template",
    )
    assert "[[ undeclared ]]" in error["fields"]["definition"][0]
    is_error(api.patch("/api/v1/templates/escalate", {"definition": [1]}, format="json"), 400)

    assert api.delete("/api/v1/templates/escalate").status_code == 204
    is_error(api.get("/api/v1/templates/escalate"), 404)
    assert not WorkflowTemplate.objects.unscoped().exists()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"slug": "has space"}, "slug"),
        ({"definition": "steps"}, "definition"),
        ({"placeholders": {"name": "x"}}, "placeholders"),
        ({"placeholders": [{"name": "1x"}]}, "placeholders[0].name"),
        ({"placeholders": [{"name": "manager"}, {"name": "manager"}]}, "placeholders[1].name"),
        ({"placeholders": [{"name": "manager", "type": "string"}]}, "placeholders[0].type"),
        ({"required_connectors": "slack"}, "required_connectors"),
        ({"name": ""}, "name"),
    ],
)
def test_organization_template_input_errors_name_the_field(api, change, field):
    error = is_error(api.post("/api/v1/templates", {**ORG_TEMPLATE, **change}, format="json"), 400)
    assert field in error["fields"], error
    assert not WorkflowTemplate.objects.unscoped().exists()


def test_slug_clashes_and_builtins_are_read_only(api):
    error = is_error(
        api.post("/api/v1/templates", {**ORG_TEMPLATE, "slug": "uptime-check"}, format="json"),
        409,
        "slug_taken",
    )
    assert error["fields"] == {"slug": ["used by a built-in template"]}
    assert api.post("/api/v1/templates", ORG_TEMPLATE, format="json").status_code == 201
    is_error(api.post("/api/v1/templates", ORG_TEMPLATE, format="json"), 409, "slug_taken")
    is_error(
        api.patch("/api/v1/templates/uptime-check", {"name": "Mine"}, format="json"),
        409,
        "builtin_template",
    )
    is_error(api.delete("/api/v1/templates/uptime-check"), 409, "builtin_template")


# --- permissions and other organizations -------------------------------------------------------


def test_a_viewer_reads_and_previews_but_cannot_instantiate_or_create(org, api):
    viewer = client_for(make_member(org, "victor@acme.test", role="viewer"))
    assert viewer.get("/api/v1/templates").status_code == 200
    assert viewer.get("/api/v1/templates/uptime-check").status_code == 200
    assert viewer.post("/api/v1/templates/uptime-check/preview", {}, format="json").json()["valid"]
    is_error(instantiate(viewer, "uptime-check"), 403, "permission_denied")
    is_error(viewer.post("/api/v1/templates", ORG_TEMPLATE, format="json"), 403)
    api.post("/api/v1/templates", ORG_TEMPLATE, format="json")
    is_error(viewer.patch("/api/v1/templates/escalate", {"name": "x"}, format="json"), 403)
    is_error(viewer.delete("/api/v1/templates/escalate"), 403)
    assert not Workflow.objects.unscoped().exists()


def _another_organizations_template_is_not_found(org, api, outsider_api):
    assert api.post("/api/v1/templates", ORG_TEMPLATE, format="json").status_code == 201
    attempts = []
    for base, headers in (
        ("/api/v1/orgs/acme/templates", {}),  # not a member
        ("/api/v1/orgs/globex/templates", {}),  # own organization, acme's slug
        ("/api/v1/templates", {"HTTP_X_ORGANIZATION": "acme"}),
        ("/api/v1/templates", {"HTTP_X_ORGANIZATION": "globex"}),
        ("/api/v1/templates", {}),
    ):
        path = f"{base}/escalate"
        attempts += [
            outsider_api.get(path, **headers),
            outsider_api.patch(path, {"name": "pwned"}, format="json", **headers),
            outsider_api.delete(path, **headers),
            outsider_api.post(f"{path}/preview", {}, format="json", **headers),
            outsider_api.post(
                f"{path}/instantiate",
                {"name": "pwned", "values": {"manager": "m@globex.test"}},
                format="json",
                **headers,
            ),
        ]
    for response in attempts:
        is_error(response, 404)
    own = outsider_api.get("/api/v1/orgs/globex/templates?source=organization").json()
    assert own["count"] == 0
    everything = outsider_api.get("/api/v1/templates?search=escalate").json()
    assert everything["count"] == 0
    with tenant_context(org.pk):
        record = WorkflowTemplate.objects.get(slug="escalate")
        assert record.name == ORG_TEMPLATE["name"]
        assert not Workflow.objects.exists()


def test_another_organizations_template_is_not_found(org, api, outsider_api):
    _another_organizations_template_is_not_found(org, api, outsider_api)


def test_another_organizations_template_is_not_found_under_row_security(
    org, api, outsider_api, as_app_role
):
    _another_organizations_template_is_not_found(org, api, outsider_api)


def test_the_same_slug_in_two_organizations(api, outsider_api):
    assert api.post("/api/v1/templates", ORG_TEMPLATE, format="json").status_code == 201
    theirs = {**ORG_TEMPLATE, "name": "Globex escalation"}
    assert outsider_api.post("/api/v1/templates", theirs, format="json").status_code == 201
    assert api.get("/api/v1/templates/escalate").json()["name"] == ORG_TEMPLATE["name"]
    assert outsider_api.get("/api/v1/templates/escalate").json()["name"] == "Globex escalation"


def test_templates_work_as_the_application_role(api, as_app_role):
    """Under row-level security: create, list, preview, instantiate and delete."""
    assert api.post("/api/v1/templates", ORG_TEMPLATE, format="json").status_code == 201
    listed = api.get("/api/v1/orgs/acme/templates?source=organization").json()
    assert [r["slug"] for r in listed["results"]] == ["escalate"]
    preview = api.post(
        "/api/v1/orgs/acme/templates/escalate/preview",
        {"values": {"manager": "m@acme.test"}},
        format="json",
    )
    assert preview.json()["valid"] is True
    made = instantiate(api, "escalate", {"manager": "m@acme.test"}, name="Escalations")
    assert made.status_code == 201 and made.json()["problems"] == []
    made = instantiate(api, "uptime-check", name="Uptime")
    assert made.status_code == 201
    assert api.delete("/api/v1/orgs/acme/templates/escalate").status_code == 204
