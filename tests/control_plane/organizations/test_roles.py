"""Custom roles, and the permission matrix of the built-in roles."""

from __future__ import annotations

import json

import pytest

from control_plane.core.tenancy import tenant_context
from control_plane.executions.api.views import ExecutionListApi
from control_plane.organizations.api.views import (
    DepartmentListApi,
    InvitationListApi,
    MemberDetailApi,
    MemberListApi,
    OrganizationDetailApi,
    QuotaApi,
    RoleListApi,
)
from control_plane.organizations.models import (
    Role,
)
from control_plane.organizations.permissions import BUILTIN_ROLES
from control_plane.users.models import User
from control_plane.workflows import services as workflow_services
from control_plane.workflows.api.views import WorkflowListApi, WorkflowPublishApi, WorkflowRunApi
from tests.control_plane.organizations.support import (
    BUILTIN_KEYS,
    _client,
    _create_role,
    _error,
    _invite,
    _member_client,
    _member_id,
    _status_codes,
)
from tests.factories import definition, make_member

pytestmark = pytest.mark.django_db


# -- roles ---------------------------------------------------------------------------------------


class TestRoles:
    def test_list_shows_the_builtin_roles_then_custom_ones(self, api):
        _create_role(api, "zeta")
        _create_role(api, "auditor")
        roles = api.get("/api/v1/roles").json()
        assert [r["key"] for r in roles] == [*BUILTIN_KEYS, "auditor", "zeta"]
        assert [r["builtin"] for r in roles] == [True] * 5 + [False] * 2
        for role in roles[:5]:
            assert set(role["permissions"]) == BUILTIN_ROLES[role["key"]].permissions

    def test_create_a_custom_role(self, api):
        response = _create_role(api, "reader", ["workflow.read", "member.read", "workflow.read"])
        assert response.status_code == 201
        assert response.json() == {
            "key": "reader",
            "name": "Reader",
            "description": "",
            "permissions": ["member.read", "workflow.read"],
            "builtin": False,
        }
        assert api.get("/api/v1/roles/reader").json() == response.json()

    @pytest.mark.parametrize("key", BUILTIN_KEYS)
    def test_a_key_of_a_builtin_role_is_a_conflict(self, api, org, key):
        response = _create_role(api, key)
        assert response.status_code == 409 and "key" in _error(response)["fields"]
        with tenant_context(org.pk):
            assert not Role.objects.exists()

    def test_a_key_taken_by_a_custom_role_is_a_conflict(self, api):
        _create_role(api)
        response = _create_role(api)
        assert response.status_code == 409 and "key" in _error(response)["fields"]

    @pytest.mark.parametrize(
        "body",
        [
            {"key": "r", "name": "R", "permissions": ["workflow.read", "world.domination"]},
            {"key": "r", "name": "R", "permissions": "workflow.read"},
            {"key": "r", "name": "R"},
        ],
        ids=["unknown", "not-a-list", "missing"],
    )
    def test_bad_permissions_are_400_naming_permissions(self, api, body):
        response = api.post("/api/v1/roles", body, format="json")
        assert response.status_code == 400
        fields = _error(response)["fields"]
        assert any(name.split(".")[0].split("[")[0] == "permissions" for name in fields), fields

    def test_a_custom_role_grants_exactly_its_permissions(self, api, org, team, published):
        _create_role(api, "reader", ["workflow.read", "member.read"])
        bob = _member_id(org, "bob@acme.test")
        assigned = api.patch(f"/api/v1/members/{bob}", {"role": "reader"}, format="json")
        assert assigned.status_code == 200 and assigned.json()["role"] == "reader"
        bob_api = _client(User.objects.get(email="bob@acme.test"))

        assert bob_api.get("/api/v1/workflows").status_code == 200
        assert bob_api.get("/api/v1/members").status_code == 200
        new_workflow = {"name": "Bob's", "definition": definition()}
        denied = bob_api.post("/api/v1/workflows", new_workflow, format="json")
        assert denied.status_code == 403 and _error(denied)["code"] == "permission_denied"
        assert bob_api.get("/api/v1/executions").status_code == 403  # no execution.read
        assert bob_api.post(f"/api/v1/workflows/{published.pk}/run", {}).status_code == 403

        changed = api.patch(
            "/api/v1/roles/reader",
            {"permissions": ["workflow.read", "member.read", "workflow.edit"]},
            format="json",
        )
        assert changed.status_code == 200 and "workflow.edit" in changed.json()["permissions"]
        assert bob_api.post("/api/v1/workflows", new_workflow, format="json").status_code == 201

    def test_a_custom_role_of_another_organization_cannot_be_assigned(
        self, api, org, outsider_api, other_org
    ):
        _create_role(api, "reader")
        make_member(other_org, "gus@globex.test", "viewer")
        gus = _member_id(other_org, "gus@globex.test")
        response = outsider_api.patch(f"/api/v1/members/{gus}", {"role": "reader"}, format="json")
        assert response.status_code == 400 and "role" in _error(response)["fields"]
        assert outsider_api.get("/api/v1/roles/reader").status_code == 404

    def test_a_role_in_use_cannot_be_deleted(self, api, org, team):
        _create_role(api, "reader")
        bob = _member_id(org, "bob@acme.test")
        api.patch(f"/api/v1/members/{bob}", {"role": "reader"}, format="json")
        in_use = api.delete("/api/v1/roles/reader")
        assert in_use.status_code == 409

        api.patch(f"/api/v1/members/{bob}", {"role": "viewer"}, format="json")
        invitation = _invite(api, role="reader").json()
        assert api.delete("/api/v1/roles/reader").status_code == 409  # an open invitation
        api.delete(f"/api/v1/invitations/{invitation['id']}")
        assert api.delete("/api/v1/roles/reader").status_code == 204
        assert api.get("/api/v1/roles/reader").status_code == 404

    @pytest.mark.parametrize("key", ["owner", "viewer"])
    def test_builtin_roles_cannot_be_changed_or_deleted(self, api, key):
        changed = api.patch(f"/api/v1/roles/{key}", {"name": "Mine now"}, format="json")
        deleted = api.delete(f"/api/v1/roles/{key}")
        assert _status_codes(changed, deleted) == [409, 409]
        assert api.get(f"/api/v1/roles/{key}").json()["name"] == BUILTIN_ROLES[key].name

    def test_unknown_roles_are_not_found(self, api):
        responses = (
            api.get("/api/v1/roles/ghost"),
            api.patch("/api/v1/roles/ghost", {"name": "G"}, format="json"),
            api.delete("/api/v1/roles/ghost"),
        )
        assert _status_codes(*responses) == [404, 404, 404]


# -- the role permission matrix ------------------------------------------------------------------


@pytest.fixture
def stage(org, user, published):
    """What the matrix's actions act on: a published workflow, a draft, a member to change."""
    with tenant_context(org.pk):
        draft = workflow_services.workflow_create(
            organization=org,
            created_by=user,
            name="Draft",
            slug="draft",
            definition=definition(),
        )
    target = make_member(org, "target@acme.test", "viewer")
    return {"published": published.pk, "draft": draft.pk, "target": _member_id(org, target.email)}


# (name, view class, method, path, body): each a request one permission guards.
ACTIONS = [
    ("list workflows", WorkflowListApi, "GET", "/workflows", None),
    (
        "create workflow",
        WorkflowListApi,
        "POST",
        "/workflows",
        {"name": "New", "definition": definition()},
    ),
    ("publish", WorkflowPublishApi, "POST", "/workflows/{draft}/publish", {}),
    ("run", WorkflowRunApi, "POST", "/workflows/{published}/run", {}),
    ("list executions", ExecutionListApi, "GET", "/executions", None),
    ("list members", MemberListApi, "GET", "/members", None),
    ("change member", MemberDetailApi, "PATCH", "/members/{target}", {"department": None}),
    ("invite", InvitationListApi, "POST", "/invitations", {"email": "n@example.test"}),
    ("create department", DepartmentListApi, "POST", "/departments", {"name": "Ops"}),
    (
        "create role",
        RoleListApi,
        "POST",
        "/roles",
        {"key": "auditor", "name": "Auditor", "permissions": ["workflow.read"]},
    ),
    ("see quota", QuotaApi, "GET", "/quota", None),
    ("rename organization", OrganizationDetailApi, "PATCH", "", {"name": "Renamed"}),
]


def _act(client, stage: dict, method: str, path: str, body):
    url = "/api/v1/orgs/acme" + path.format(**stage)
    data = "" if body is None else json.dumps(body)
    return client.generic(method, url, data, content_type="application/json")


class TestRolePermissionMatrix:
    @pytest.mark.parametrize("role", BUILTIN_KEYS)
    @pytest.mark.parametrize(
        ("view", "method", "path", "body"),
        [action[1:] for action in ACTIONS],
        ids=[action[0] for action in ACTIONS],
    )
    def test_a_role_is_refused_exactly_what_it_lacks(
        self, org, stage, role, view, method, path, body
    ):
        client = _member_client(org, f"{role}-member@acme.test", role)
        allowed = view.required_permissions[method] in BUILTIN_ROLES[role].permissions
        response = _act(client, stage, method, path, body)
        if allowed:
            assert 200 <= response.status_code < 300, (role, response.json())
        else:
            assert response.status_code == 403, (role, response.content)
            assert _error(response)["code"] == "permission_denied"

    def test_spot_checks(self, org, stage):
        """Spelled out, so the matrix cannot pass by deriving wrong expectations."""
        viewer = _member_client(org, "vic@acme.test", "viewer")
        operator = _member_client(org, "otto@acme.test", "operator")
        editor = _member_client(org, "eddie@acme.test", "editor")
        run = f"/api/v1/workflows/{stage['published']}/run"
        publish = f"/api/v1/workflows/{stage['draft']}/publish"

        assert viewer.post(run, {}, format="json").status_code == 403
        assert viewer.get("/api/v1/workflows").status_code == 200
        assert operator.post(run, {}, format="json").status_code == 202
        assert operator.post(publish, {}, format="json").status_code == 403
        assert editor.post(publish, {}, format="json").status_code == 201
        assert _invite(editor).status_code == 403
        assert editor.get("/api/v1/quota").status_code == 403

    def test_the_matrix_denies_and_allows_something_for_every_role(self):
        lacking = {
            role: {
                name
                for name, view, method, *_ in ACTIONS
                if view.required_permissions[method] not in BUILTIN_ROLES[role].permissions
            }
            for role in BUILTIN_KEYS
        }
        assert lacking["owner"] == lacking["admin"] == set()
        assert lacking["editor"] >= {"invite", "see quota", "rename organization"}
        assert "publish" in lacking["operator"] and "run" not in lacking["operator"]
        assert {"run", "publish", "create workflow"} <= lacking["viewer"]
        assert "list workflows" not in lacking["viewer"]
