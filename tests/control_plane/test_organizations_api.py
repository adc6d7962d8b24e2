"""Organizations over HTTP: organizations, members, invitations, departments, roles, quotas, the
role permission matrix and how a request names its organization (URL or X-Organization).

Every client here checks every response: never a 500, and every error in the one JSON shape."""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import quote, unquote

import pytest
from django.core import mail
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from control_plane.core.tenancy import tenant_context
from control_plane.executions.api.views import ExecutionListApi
from control_plane.executions.models import WorkflowExecution
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
    PLAN_LIMITS,
    Department,
    Invitation,
    Organization,
    OrganizationMember,
    Role,
    UsageQuota,
)
from control_plane.organizations.permissions import BUILTIN_ROLES, PERMISSIONS
from control_plane.users.models import User
from control_plane.workflows import services as workflow_services
from control_plane.workflows.api.views import WorkflowListApi, WorkflowPublishApi, WorkflowRunApi
from flowpilot import config
from tests.conftest import bearer_token
from tests.factories import PASSWORD, definition, make_member, make_organization, run_workflow

pytestmark = pytest.mark.django_db

BUILTIN_KEYS = ["owner", "admin", "editor", "operator", "viewer"]


def _error(response) -> dict:
    """The error of a non-success response, checked to be in the one JSON error shape."""
    assert response["Content-Type"].startswith("application/json"), response.content
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"].get("code"), str) and body["error"]["code"], body
    assert isinstance(body["error"].get("message"), str) and body["error"]["message"], body
    return body["error"]


class CheckedClient(APIClient):
    """An API client that fails the test on any 500 or any error outside the error shape."""

    def request(self, **kwargs):
        response = super().request(**kwargs)
        assert response.status_code < 500, response.content
        if response.status_code >= 400:
            _error(response)
        return response


def _client(user: User | None = None, organization: str | None = None) -> CheckedClient:
    client = CheckedClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {bearer_token(user)}")
    if organization is not None:
        client.defaults["HTTP_X_ORGANIZATION"] = organization
    return client


def _member_client(org: Organization, email: str, role: str) -> CheckedClient:
    return _client(make_member(org, email, role))


def _sign_up(email: str, *, verified: bool = True) -> CheckedClient:
    """A new user with `email` (not yet in any organization), signed in."""
    return _client(User.objects.create_user(email, PASSWORD, email_verified=verified))


def _membership(org: Organization, email: str) -> OrganizationMember | None:
    with tenant_context(org.pk):
        return (
            OrganizationMember.objects.select_related("department")
            .filter(user__email=email)
            .first()
        )


def _member_id(org: Organization, email: str) -> int:
    return _membership(org, email).pk


def _invitation(org: Organization, invitation_id: int) -> Invitation:
    with tenant_context(org.pk):
        return Invitation.objects.get(pk=invitation_id)


def _results(response) -> list[dict]:
    assert response.status_code == 200, response.json()
    return response.json()["results"]


def _emails(response) -> list[str]:
    return [member["email"] for member in _results(response)]


def _status_codes(*responses) -> list[int]:
    return [response.status_code for response in responses]


@pytest.fixture
def api(user):
    """Alice, the owner of acme (a checked client)."""
    return _client(user)


@pytest.fixture(params=["owner_role", "app_role"])
def database_role(request, api, org):
    """Run the test twice: as the test database's owner, then as the application role, so
    PostgreSQL row-level security applies to every query the requests make."""
    if request.param == "app_role":
        request.getfixturevalue("as_app_role")
        with connection.cursor() as cursor:
            cursor.execute("SELECT rolname, rolbypassrls FROM pg_roles WHERE rolname = user")
            assert cursor.fetchone() == (config.APP_ROLE, False)
    return request.param


# -- organizations -------------------------------------------------------------------------------


class TestOrganizations:
    def test_create_makes_the_creator_owner_and_derives_the_slug(self, api, user):
        response = api.post("/api/v1/orgs", {"name": "Wayne Enterprises"}, format="json")
        assert response.status_code == 201, response.json()
        body = response.json()
        assert body["slug"] == "wayne-enterprises" and body["name"] == "Wayne Enterprises"
        assert body["plan"] == "free"

        created = Organization.objects.get(slug="wayne-enterprises")
        assert created.created_by == user
        assert _membership(created, user.email).role == "owner"
        assert UsageQuota.objects.unscoped().filter(organization=created).exists()
        detail = api.get("/api/v1/orgs/wayne-enterprises")
        assert detail.status_code == 200 and detail.json()["id"] == body["id"]

    def test_create_with_a_chosen_slug(self, api):
        response = api.post("/api/v1/orgs", {"name": "Wayne", "slug": "wayne-hq"}, format="json")
        assert response.status_code == 201 and response.json()["slug"] == "wayne-hq"

    @pytest.mark.parametrize(
        "body", [{"name": "Globex"}, {"name": "Another", "slug": "globex"}], ids=["auto", "chosen"]
    )
    def test_a_taken_slug_is_a_conflict_naming_the_slug(self, api, other_org, body):
        response = api.post("/api/v1/orgs", body, format="json")
        assert response.status_code == 409
        assert _error(response)["code"] == "conflict" and "slug" in _error(response)["fields"]
        assert Organization.objects.filter(slug="globex").count() == 1

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({}, "name"),
            ({"name": ""}, "name"),
            ({"name": "   "}, "name"),
            ({"name": "x" * 201}, "name"),
            ({"name": "Fine", "slug": "not a slug!"}, "slug"),
            ({"name": "Fine", "slug": "s" * 61}, "slug"),
            ({"name": "!!!"}, "slug"),  # nothing to make a slug from
        ],
    )
    def test_create_rejects_bad_input_by_field(self, api, body, field):
        before = Organization.objects.count()
        response = api.post("/api/v1/orgs", body, format="json")
        assert response.status_code == 400
        assert field in _error(response)["fields"]
        assert Organization.objects.count() == before

    def test_list_shows_only_my_organizations_with_my_role(self, api, user, other_org):
        make_member(other_org, user.email, "viewer")
        make_organization("initech")  # not hers
        response = api.get("/api/v1/orgs")
        mine = [(org["slug"], org["role"]) for org in _results(response)]
        assert mine == [("acme", "owner"), ("globex", "viewer")]
        assert response.json()["count"] == 2

    def test_a_suspended_membership_is_not_listed(self, api, user, other_org):
        make_member(other_org, user.email, "viewer")
        OrganizationMember.objects.unscoped().filter(organization=other_org).update(
            status="suspended"
        )
        assert [org["slug"] for org in _results(api.get("/api/v1/orgs"))] == ["acme"]

    def test_detail_get_and_patch(self, api, org):
        response = api.get("/api/v1/orgs/acme")
        assert response.status_code == 200
        assert {key: response.json()[key] for key in ("id", "slug", "name", "plan")} == {
            "id": org.pk,
            "slug": "acme",
            "name": "Acme",
            "plan": "free",
        }
        patched = api.patch(
            "/api/v1/orgs/acme", {"name": "Acme Corp", "settings": {"tz": "UTC"}}, format="json"
        )
        assert patched.status_code == 200
        assert patched.json()["name"] == "Acme Corp" and patched.json()["settings"] == {"tz": "UTC"}
        org.refresh_from_db()
        assert org.name == "Acme Corp" and org.settings == {"tz": "UTC"} and org.slug == "acme"

    @pytest.mark.parametrize(
        ("body", "field"), [({"name": ""}, "name"), ({"settings": "nope"}, "settings")]
    )
    def test_patch_rejects_bad_input_by_field(self, api, body, field):
        response = api.patch("/api/v1/orgs/acme", body, format="json")
        assert response.status_code == 400 and field in _error(response)["fields"]

    def test_an_editor_reads_but_cannot_patch_the_organization(self, org):
        editor = _member_client(org, "bob@acme.test", "editor")
        assert editor.get("/api/v1/orgs/acme").status_code == 200
        response = editor.patch("/api/v1/orgs/acme", {"name": "Bob's"}, format="json")
        assert response.status_code == 403 and _error(response)["code"] == "permission_denied"
        org.refresh_from_db()
        assert org.name == "Acme"

    def test_permission_list_names_every_permission(self, api):
        response = api.get("/api/v1/permissions")
        assert response.status_code == 200
        assert {p["key"]: p["description"] for p in response.json()} == PERMISSIONS

    @pytest.mark.parametrize("path", ["/api/v1/orgs", "/api/v1/permissions", "/api/v1/orgs/acme"])
    def test_signed_out_callers_get_401(self, org, path):
        response = _client().get(path)
        assert response.status_code == 401 and _error(response)["code"] == "not_authenticated"


# -- members -------------------------------------------------------------------------------------


@pytest.fixture
def team(org):
    """bob (editor) and carol (viewer) join alice (owner) in acme."""
    make_member(org, "bob@acme.test", "editor")
    make_member(org, "carol@acme.test", "viewer")


class TestMembers:
    def test_list_and_filters_by_role_and_department(self, api, org, team):
        support = api.post("/api/v1/departments", {"name": "Support"}, format="json").json()
        api.patch(
            f"/api/v1/members/{_member_id(org, 'bob@acme.test')}",
            {"department": support["id"]},
            format="json",
        )
        everyone = api.get("/api/v1/members")
        assert _emails(everyone) == ["alice@acme.test", "bob@acme.test", "carol@acme.test"]
        assert [m["role"] for m in _results(everyone)] == ["owner", "editor", "viewer"]
        assert _emails(api.get("/api/v1/members?role=viewer")) == ["carol@acme.test"]
        in_support = api.get(f"/api/v1/members?department={support['id']}")
        assert _emails(in_support) == ["bob@acme.test"]
        assert _results(in_support)[0]["department"] == {"id": support["id"], "name": "Support"}

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            ("role=no+such+role", []),
            ("department=" + "9" * 30, []),
            ("department=%C2%B2", ["alice@acme.test", "bob@acme.test", "carol@acme.test"]),
            ("department=abc", ["alice@acme.test", "bob@acme.test", "carol@acme.test"]),
        ],
        ids=["unknown-role", "huge-department", "superscript-two", "not-a-number"],
    )
    def test_odd_filters_match_no_one_or_are_ignored(self, api, team, query, expected):
        assert _emails(api.get(f"/api/v1/members?{query}")) == expected

    def test_a_nul_in_a_filter_is_a_400(self, api, team):
        response = api.get("/api/v1/members?role=%00")
        assert response.status_code == 400 and response.json()["error"]["code"] == "bad_request"

    def test_get_one_member(self, api, org, team, user):
        response = api.get(f"/api/v1/members/{_member_id(org, 'carol@acme.test')}")
        assert response.status_code == 200
        body = response.json()
        assert body["email"] == "carol@acme.test" and body["role"] == "viewer"
        assert body["department"] is None and body["status"] == "active"

    def test_a_member_of_another_organization_is_not_found(self, api, other_org):
        make_member(other_org, "mallory@globex.test")
        response = api.get(f"/api/v1/members/{_member_id(other_org, 'mallory@globex.test')}")
        assert response.status_code == 404 and _error(response)["code"] == "not_found"

    def test_change_role_department_and_status(self, api, org, team, database_role):
        bob = _member_id(org, "bob@acme.test")
        department = api.post("/api/v1/departments", {"name": "Ops"}, format="json").json()

        role = api.patch(f"/api/v1/members/{bob}", {"role": "operator"}, format="json")
        assert role.status_code == 200 and role.json()["role"] == "operator"
        moved = api.patch(f"/api/v1/members/{bob}", {"department": department["id"]}, format="json")
        assert moved.json()["department"] == {"id": department["id"], "name": "Ops"}
        assert _membership(org, "bob@acme.test").department_id == department["id"]
        cleared = api.patch(f"/api/v1/members/{bob}", {"department": None}, format="json")
        assert cleared.status_code == 200 and cleared.json()["department"] is None

        suspended = api.patch(f"/api/v1/members/{bob}", {"status": "suspended"}, format="json")
        assert suspended.status_code == 200 and suspended.json()["status"] == "suspended"
        member = _membership(org, "bob@acme.test")
        assert (member.role, member.status, member.department) == ("operator", "suspended", None)
        # A suspended member is no longer let in.
        bob_api = _client(User.objects.get(email="bob@acme.test"))
        assert bob_api.get("/api/v1/orgs/acme/workflows").status_code == 404

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"role": "wizard"}, "role"),
            ({"role": "Not A Slug"}, "role"),
            ({"department": 999_999}, "department"),
            ({"department": 0}, "department"),
            ({"status": "banned"}, "status"),
        ],
    )
    def test_bad_member_changes_are_400_naming_the_field(self, api, org, team, body, field):
        response = api.patch(
            f"/api/v1/members/{_member_id(org, 'bob@acme.test')}", body, format="json"
        )
        assert response.status_code == 400 and field in _error(response)["fields"]
        assert _membership(org, "bob@acme.test").role == "editor"

    @pytest.mark.parametrize(
        ("method", "body"),
        [
            ("patch", {"role": "admin"}),
            ("patch", {"status": "suspended"}),
            ("delete", None),
        ],
        ids=["demote", "suspend", "remove"],
    )
    def test_the_last_owner_cannot_be_demoted_suspended_or_removed(
        self, api, org, user, team, database_role, method, body
    ):
        alice = _member_id(org, user.email)
        response = getattr(api, method)(f"/api/v1/members/{alice}", body, format="json")
        assert response.status_code == 409 and _error(response)["code"] == "conflict"
        member = _membership(org, user.email)
        assert (member.role, member.status) == ("owner", "active")

    def test_an_owner_can_demote_another_owner_when_two_exist(self, api, org, user, database_role):
        make_member(org, "olga@acme.test", "owner")
        olga = _member_id(org, "olga@acme.test")
        response = api.patch(f"/api/v1/members/{olga}", {"role": "admin"}, format="json")
        assert response.status_code == 200 and response.json()["role"] == "admin"
        # Now alice is the last owner again.
        alice = _member_id(org, user.email)
        again = api.patch(f"/api/v1/members/{alice}", {"role": "admin"}, format="json")
        assert again.status_code == 409

    @pytest.mark.parametrize(
        ("target", "method", "body"),
        [
            ("bob@acme.test", "patch", {"role": "owner"}),
            ("alice@acme.test", "patch", {"role": "editor"}),
            ("alice@acme.test", "patch", {"status": "suspended"}),
            ("alice@acme.test", "delete", None),
        ],
        ids=["make-owner", "demote-owner", "suspend-owner", "remove-owner"],
    )
    def test_an_admin_cannot_make_or_change_owners(self, org, team, user, target, method, body):
        make_member(org, "olga@acme.test", "owner")  # so the last-owner rule is not what stops it
        admin = _member_client(org, "adam@acme.test", "admin")
        before = _membership(org, target)
        response = getattr(admin, method)(f"/api/v1/members/{before.pk}", body, format="json")
        assert response.status_code == 403 and _error(response)["code"] == "permission_denied"
        after = _membership(org, target)
        assert (after.role, after.status) == (before.role, before.status)

    def test_an_admin_manages_other_members(self, org, team):
        admin = _member_client(org, "adam@acme.test", "admin")
        bob = _member_id(org, "bob@acme.test")
        response = admin.patch(f"/api/v1/members/{bob}", {"role": "viewer"}, format="json")
        assert response.status_code == 200 and response.json()["role"] == "viewer"
        assert admin.delete(f"/api/v1/members/{bob}").status_code == 204
        assert _membership(org, "bob@acme.test") is None

    def test_a_viewer_can_leave(self, org, team, database_role):
        carol_api = _client(User.objects.get(email="carol@acme.test"))
        response = carol_api.delete(f"/api/v1/members/{_member_id(org, 'carol@acme.test')}")
        assert response.status_code == 204
        assert _membership(org, "carol@acme.test") is None
        assert _results(carol_api.get("/api/v1/orgs")) == []

    def test_a_member_whose_role_grants_nothing_can_still_leave(self, api, org, team):
        _create_role(api, "nobody", [])
        bob = _member_id(org, "bob@acme.test")
        api.patch(f"/api/v1/members/{bob}", {"role": "nobody"}, format="json")
        bob_api = _client(User.objects.get(email="bob@acme.test"))
        carol = _member_id(org, "carol@acme.test")
        refused = (bob_api.get("/api/v1/members"), bob_api.delete(f"/api/v1/members/{carol}"))
        assert _status_codes(*refused) == [403, 403]
        assert bob_api.delete(f"/api/v1/members/{bob}").status_code == 204
        assert _membership(org, "bob@acme.test") is None
        assert _membership(org, "carol@acme.test") is not None

    def test_a_viewer_cannot_remove_or_change_others(self, org, team):
        carol_api = _client(User.objects.get(email="carol@acme.test"))
        bob = _member_id(org, "bob@acme.test")
        removed = carol_api.delete(f"/api/v1/members/{bob}")
        changed = carol_api.patch(f"/api/v1/members/{bob}", {"role": "viewer"}, format="json")
        assert _status_codes(removed, changed) == [403, 403]
        assert _membership(org, "bob@acme.test").role == "editor"
        assert carol_api.delete("/api/v1/members/999999").status_code == 404

    def test_an_owner_removes_a_member(self, api, org, team, database_role):
        bob = _member_id(org, "bob@acme.test")
        assert api.delete(f"/api/v1/members/{bob}").status_code == 204
        assert _membership(org, "bob@acme.test") is None
        assert api.delete(f"/api/v1/members/{bob}").status_code == 404


# -- invitations ---------------------------------------------------------------------------------


def _invite(client, email: str = "bob@example.test", role: str = "editor", **extra):
    body = {"email": email, "role": role, **extra}
    return client.post("/api/v1/invitations", body, format="json")


def _expire(invitation_id: int) -> None:
    Invitation.objects.unscoped().filter(pk=invitation_id).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )


def _accept(client, token: str):
    return client.post("/api/v1/invitations/accept", {"token": token}, format="json")


class TestInvitations:
    def test_create_mails_the_token_and_shows_it_once(self, api, org):
        response = _invite(api, "Bob@Example.test", "viewer")
        assert response.status_code == 201, response.json()
        body = response.json()
        assert body["email"] == "bob@example.test" and body["role"] == "viewer"
        assert body["status"] == "pending" and body["invited_by"] == "alice@acme.test"
        token = body["token"]
        assert len(mail.outbox) == 1
        message = mail.outbox[0]
        assert message.to == ["bob@example.test"]
        assert quote(token) in message.body and "Acme" in message.subject

        detail = api.get(f"/api/v1/invitations/{body['id']}")
        assert detail.status_code == 200 and "token" not in detail.json()
        assert all("token" not in item for item in _results(api.get("/api/v1/invitations")))
        stored = _invitation(org, body["id"]).token_hash
        assert len(stored) == 64 and token not in stored  # only a hash of its secret is kept

    def test_list_filters_by_status(self, api, org):
        created = {name: _invite(api, f"{name}@example.test").json() for name in "prea"}
        api.delete(f"/api/v1/invitations/{created['r']['id']}")
        _expire(created["e"]["id"])
        assert _accept(_sign_up("a@example.test"), created["a"]["token"]).status_code == 201

        for status_ in ("pending", "revoked", "expired", "accepted"):
            listed = _results(api.get(f"/api/v1/invitations?status={status_}"))
            assert [(i["email"], i["status"]) for i in listed] == [
                (f"{status_[0]}@example.test", status_)
            ]
        everything = _results(api.get("/api/v1/invitations"))
        assert sorted(i["email"] for i in everything) == [f"{n}@example.test" for n in "aepr"]

    def test_revoke(self, api, org):
        invitation = _invite(api).json()
        response = api.delete(f"/api/v1/invitations/{invitation['id']}")
        assert response.status_code == 200 and response.json()["status"] == "revoked"
        assert _invitation(org, invitation["id"]).revoked_at is not None
        again = api.delete(f"/api/v1/invitations/{invitation['id']}")
        assert again.status_code == 409
        assert api.delete("/api/v1/invitations/999999").status_code == 404

    def test_accept_makes_a_member_with_the_invited_role_and_department(
        self, api, org, database_role
    ):
        department = api.post("/api/v1/departments", {"name": "Support"}, format="json").json()
        invitation = _invite(api, "bob@example.test", "operator", department=department["id"])
        bob_api = _sign_up("bob@example.test")
        assert bob_api.get("/api/v1/orgs/acme/workflows").status_code == 404  # not yet

        response = _accept(bob_api, invitation.json()["token"])
        assert response.status_code == 201, response.json()
        assert response.json()["slug"] == "acme" and response.json()["role"] == "operator"
        member = _membership(org, "bob@example.test")
        assert member.role == "operator" and member.department_id == department["id"]
        accepted = _invitation(org, invitation.json()["id"])
        assert accepted.status == "accepted" and accepted.accepted_by.email == "bob@example.test"
        assert [(o["slug"], o["role"]) for o in _results(bob_api.get("/api/v1/orgs"))] == [
            ("acme", "operator")
        ]
        assert bob_api.get("/api/v1/orgs/acme/workflows").status_code == 200

    def test_the_token_from_the_mail_link_works(self, api, org):
        _invite(api)
        link_token = mail.outbox[0].body.split("token=")[1].split()[0]
        response = _accept(_sign_up("bob@example.test"), unquote(link_token))
        assert response.status_code == 201

    def test_an_accepted_token_cannot_be_used_again(self, api, org, database_role):
        token = _invite(api).json()["token"]
        bob_api = _sign_up("bob@example.test")
        assert _accept(bob_api, token).status_code == 201
        again = _accept(bob_api, token)
        assert again.status_code == 400 and _error(again)["code"] == "invalid_token"

    def test_a_revoked_invitation_cannot_be_accepted(self, api, org):
        invitation = _invite(api).json()
        api.delete(f"/api/v1/invitations/{invitation['id']}")
        response = _accept(_sign_up("bob@example.test"), invitation["token"])
        assert response.status_code == 400 and _error(response)["code"] == "invalid_token"
        assert _membership(org, "bob@example.test") is None

    def test_an_expired_invitation_cannot_be_accepted(self, api, org):
        invitation = _invite(api).json()
        _expire(invitation["id"])
        response = _accept(_sign_up("bob@example.test"), invitation["token"])
        assert response.status_code == 400 and _error(response)["code"] == "invalid_token"
        assert _membership(org, "bob@example.test") is None
        assert api.get(f"/api/v1/invitations/{invitation['id']}").json()["status"] == "expired"

    @pytest.mark.parametrize(
        "tamper",
        [
            lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
            lambda t: "A" + t[1:] if not t.startswith("A") else "B" + t[1:],
            lambda t: "not-a-token",
            lambda t: t + ":extra",
        ],
        ids=["signature", "payload", "garbage", "extra-part"],
    )
    def test_a_tampered_token_is_invalid(self, api, org, tamper):
        token = _invite(api).json()["token"]
        response = _accept(_sign_up("bob@example.test"), tamper(token))
        assert response.status_code == 400 and _error(response)["code"] == "invalid_token"
        assert _membership(org, "bob@example.test") is None

    @pytest.mark.parametrize("body", [{}, {"token": ""}, {"token": "x" * 501}])
    def test_accept_without_a_usable_token_is_400_naming_it(self, api, body):
        bob_api = _sign_up("bob@example.test")
        response = bob_api.post("/api/v1/invitations/accept", body, format="json")
        assert response.status_code == 400 and "token" in _error(response)["fields"]

    def test_accept_as_another_user_is_refused(self, api, org, database_role):
        token = _invite(api, "bob@example.test").json()["token"]
        eve_api = _sign_up("eve@example.test")
        response = _accept(eve_api, token)
        assert response.status_code == 403 and _error(response)["code"] == "invitation_wrong_email"
        assert _membership(org, "eve@example.test") is None
        # The invitation is untouched: bob can still accept it.
        assert _accept(_sign_up("bob@example.test"), token).status_code == 201

    def test_accept_with_an_unverified_address_is_refused(self, api, org):
        token = _invite(api).json()["token"]
        response = _accept(_sign_up("bob@example.test", verified=False), token)
        assert response.status_code == 403 and _error(response)["code"] == "email_not_verified"
        assert _membership(org, "bob@example.test") is None

    def test_accept_signed_out_is_401(self, api):
        token = _invite(api).json()["token"]
        assert _accept(_client(), token).status_code == 401

    def test_accept_when_already_a_member_is_a_conflict(self, api, org):
        token = _invite(api, "bob@example.test", "admin").json()["token"]
        make_member(org, "bob@example.test", "viewer")  # joined another way meanwhile
        bob_api = _client(User.objects.get(email="bob@example.test"))
        response = _accept(bob_api, token)
        assert response.status_code == 409
        assert _membership(org, "bob@example.test").role == "viewer"

    @pytest.mark.parametrize("email", ["alice@acme.test", "ALICE@acme.test"])
    def test_inviting_a_member_is_a_conflict(self, api, email):
        response = _invite(api, email)
        assert response.status_code == 409 and "email" in _error(response)["fields"]
        assert mail.outbox == []

    def test_a_second_open_invitation_is_a_conflict_until_revoked_or_expired(self, api, org):
        first = _invite(api).json()
        second = _invite(api, "BOB@example.test")
        assert second.status_code == 409 and "email" in _error(second)["fields"]
        api.delete(f"/api/v1/invitations/{first['id']}")
        third = _invite(api)
        assert third.status_code == 201
        _expire(third.json()["id"])
        fourth = _invite(api)
        assert fourth.status_code == 201
        assert _invitation(org, third.json()["id"]).status == "revoked"  # made room

    def test_an_admin_cannot_invite_an_owner_but_an_owner_can(self, api, org):
        admin = _member_client(org, "adam@acme.test", "admin")
        refused = _invite(admin, "bob@example.test", "owner")
        assert refused.status_code == 403 and _error(refused)["code"] == "permission_denied"
        assert _invite(admin, "bob@example.test", "editor").status_code == 201
        assert _invite(api, "carol@example.test", "owner").status_code == 201

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"email": "not-an-email"}, "email"),
            ({}, "email"),
            ({"email": "bob@example.test", "role": "wizard"}, "role"),
            ({"email": "bob@example.test", "department": 999_999}, "department"),
        ],
    )
    def test_bad_invitations_are_400_by_field(self, api, org, body, field):
        response = api.post("/api/v1/invitations", body, format="json")
        assert response.status_code == 400 and field in _error(response)["fields"]
        assert mail.outbox == []
        with tenant_context(org.pk):
            assert not Invitation.objects.exists()

    def test_another_organizations_invitation_is_not_found(self, api, outsider_api):
        theirs = _invite(outsider_api, "bob@example.test").json()
        assert api.get(f"/api/v1/invitations/{theirs['id']}").status_code == 404
        assert api.delete(f"/api/v1/invitations/{theirs['id']}").status_code == 404


@pytest.fixture
def outsider_api(other_org):
    """The owner of globex (a checked client)."""
    return _client(make_member(other_org, "mallory@globex.test"))


# -- departments ---------------------------------------------------------------------------------


class TestDepartments:
    def test_create_list_get_rename_delete(self, api):
        created = api.post(
            "/api/v1/departments", {"name": "Support", "description": "Tier 1"}, format="json"
        )
        assert created.status_code == 201
        department = created.json()
        assert (department["name"], department["description"]) == ("Support", "Tier 1")
        api.post("/api/v1/departments", {"name": "Billing"}, format="json")
        names = [d["name"] for d in _results(api.get("/api/v1/departments"))]
        assert names == ["Billing", "Support"]

        path = f"/api/v1/departments/{department['id']}"
        assert api.get(path).json()["name"] == "Support"
        renamed = api.patch(path, {"name": "Customer Care"}, format="json")
        assert renamed.status_code == 200 and renamed.json()["name"] == "Customer Care"
        assert api.delete(path).status_code == 204
        assert _status_codes(api.get(path), api.delete(path), api.patch(path, {})) == [404] * 3

    def test_duplicate_names_are_conflicts(self, api):
        api.post("/api/v1/departments", {"name": "Support"}, format="json")
        billing = api.post("/api/v1/departments", {"name": "Billing"}, format="json").json()
        again = api.post("/api/v1/departments", {"name": "Support"}, format="json")
        assert again.status_code == 409 and "name" in _error(again)["fields"]
        renamed = api.patch(
            f"/api/v1/departments/{billing['id']}", {"name": "Support"}, format="json"
        )
        assert renamed.status_code == 409

    def test_the_same_name_in_another_organization_is_fine(self, api, outsider_api):
        api.post("/api/v1/departments", {"name": "Support"}, format="json")
        response = outsider_api.post("/api/v1/departments", {"name": "Support"}, format="json")
        assert response.status_code == 201

    @pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": "x" * 101}])
    def test_bad_names_are_400(self, api, body):
        response = api.post("/api/v1/departments", body, format="json")
        assert response.status_code == 400 and "name" in _error(response)["fields"]

    def test_deleting_a_department_leaves_its_members_without_one(self, api, org, team):
        department = api.post("/api/v1/departments", {"name": "Support"}, format="json").json()
        bob = _member_id(org, "bob@acme.test")
        api.patch(f"/api/v1/members/{bob}", {"department": department["id"]}, format="json")
        invitation = _invite(api, department=department["id"]).json()
        assert invitation["department"] == {"id": department["id"], "name": "Support"}

        assert api.delete(f"/api/v1/departments/{department['id']}").status_code == 204
        member = _membership(org, "bob@acme.test")
        assert member is not None and member.department_id is None
        assert api.get(f"/api/v1/members/{bob}").json()["department"] is None
        assert _invitation(org, invitation["id"]).department_id is None

    def test_a_viewer_lists_departments_but_cannot_create_them(self, org):
        viewer = _member_client(org, "vic@acme.test", "viewer")
        assert viewer.get("/api/v1/departments").status_code == 200
        assert viewer.post("/api/v1/departments", {"name": "X"}, format="json").status_code == 403


# -- roles ---------------------------------------------------------------------------------------


def _create_role(client, key: str = "reader", permissions=("workflow.read", "member.read")):
    return client.post(
        "/api/v1/roles",
        {"key": key, "name": key.title(), "permissions": list(permissions)},
        format="json",
    )


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


# -- quotas --------------------------------------------------------------------------------------


class TestQuota:
    def test_shows_plan_limits_and_this_months_usage(self, api, published):
        for _ in range(3):
            run_workflow(published)
        last_month = run_workflow(published)
        WorkflowExecution.objects.unscoped().filter(pk=last_month.pk).update(
            created_at=timezone.now().replace(day=1) - timedelta(days=3), status="success"
        )
        response = api.get("/api/v1/quota")
        assert response.status_code == 200
        body = response.json()
        assert body["plan"] == "free"
        assert body["limits"] == PLAN_LIMITS["free"] and body["limits"]["concurrent_runs"] == 2
        assert body["usage"]["runs_per_month"] == 3
        assert body["usage"]["concurrent_runs"] == 3  # queued

    def test_a_non_staff_owner_cannot_change_it(self, api, org):
        response = api.patch("/api/v1/quota", {"concurrent_runs": 50}, format="json")
        assert response.status_code == 403 and _error(response)["code"] == "permission_denied"
        assert api.get("/api/v1/quota").json()["limits"]["concurrent_runs"] == 2

    def test_staff_change_plan_and_limits_and_null_restores_the_plan_value(self, api, user, org):
        user.is_staff = True
        user.save(update_fields=["is_staff"])
        changed = api.patch("/api/v1/quota", {"plan": "team", "concurrent_runs": 7}, format="json")
        assert changed.status_code == 200, changed.json()
        assert changed.json()["plan"] == "team"
        assert changed.json()["limits"] == {**PLAN_LIMITS["team"], "concurrent_runs": 7}
        org.refresh_from_db()
        assert org.plan == "team"

        restored = api.patch("/api/v1/quota", {"concurrent_runs": None}, format="json")
        team_runs = PLAN_LIMITS["team"]["concurrent_runs"]
        assert restored.json()["limits"]["concurrent_runs"] == team_runs
        assert api.get("/api/v1/quota").json()["limits"] == PLAN_LIMITS["team"]

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"plan": "platinum"}, "plan"),
            ({"concurrent_runs": -1}, "concurrent_runs"),
            ({"concurrent_runs": "many"}, "concurrent_runs"),
            ({"concurrent_runs": 10**12}, "concurrent_runs"),
            ({"runs_per_month": 10**20}, "runs_per_month"),
        ],
    )
    def test_staff_bad_input_is_400_by_field(self, api, user, body, field):
        user.is_staff = True
        user.save(update_fields=["is_staff"])
        response = api.patch("/api/v1/quota", body, format="json")
        assert response.status_code == 400 and field in _error(response)["fields"]
        assert api.get("/api/v1/quota").json()["limits"] == PLAN_LIMITS["free"]

    def test_a_viewer_cannot_see_it(self, org):
        viewer = _member_client(org, "vic@acme.test", "viewer")
        response = viewer.get("/api/v1/quota")
        assert response.status_code == 403 and _error(response)["code"] == "permission_denied"


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


# -- naming the organization: URL or X-Organization ----------------------------------------------


class TestOrganizationSelection:
    @pytest.mark.parametrize("path", ["/workflows", "/members", "/roles", "/quota"])
    def test_url_and_header_forms_answer_the_same(self, user, org, published, path):
        by_url = _client(user).get(f"/api/v1/orgs/acme{path}")
        by_header = _client(user, organization="acme").get(f"/api/v1{path}")
        only_org = _client(user).get(f"/api/v1{path}")  # her only organization
        assert by_url.status_code == by_header.status_code == only_org.status_code == 200
        assert by_url.json() == by_header.json() == only_org.json()

    def test_writes_through_the_header_land_in_that_organization(self, user, org):
        response = _client(user, organization="acme").post(
            "/api/v1/departments", {"name": "Support"}, format="json"
        )
        assert response.status_code == 201
        assert Department.objects.for_organization(org.pk).filter(name="Support").exists()

    def test_a_member_of_two_organizations_must_name_one(self, user, org, other_org, published):
        make_member(other_org, user.email, "viewer")
        unnamed = _client(user).get("/api/v1/workflows")
        assert unnamed.status_code == 400
        assert _error(unnamed)["code"] == "organization_required"

        acme = _results(_client(user, organization="acme").get("/api/v1/workflows"))
        globex = _results(_client(user, organization="globex").get("/api/v1/workflows"))
        assert [w["id"] for w in acme] == [published.pk] and globex == []
        assert _results(_client(user).get("/api/v1/orgs/globex/workflows")) == []
        # The role is the one in the organization named: a viewer in globex.
        refused = _client(user, organization="globex").post(
            "/api/v1/departments", {"name": "X"}, format="json"
        )
        assert refused.status_code == 403

    @pytest.mark.parametrize("slug", ["globex", "nowhere"], ids=["not-a-member", "unknown"])
    def test_an_organization_one_is_not_in_is_not_found(self, user, org, other_org, slug):
        responses = [
            _client(user).get(f"/api/v1/orgs/{slug}/workflows"),
            _client(user, organization=slug).get("/api/v1/workflows"),
            _client(user).get(f"/api/v1/orgs/{slug}"),
            _client(user).patch(f"/api/v1/orgs/{slug}", {"name": "Mine"}, format="json"),
        ]
        assert _status_codes(*responses) == [404] * 4
        assert {_error(r)["code"] for r in responses} == {"not_found"}
        assert {_error(r)["message"] for r in responses[:2]} == {"Organization not found."}
        other_org.refresh_from_db()
        assert other_org.name == "Globex"

    @pytest.mark.parametrize("header", ["not a slug", "x" * 300, "acme\x00", "../acme"])
    def test_a_malformed_header_is_not_found(self, user, org, header):
        response = _client(user, organization=header).get("/api/v1/workflows")
        assert response.status_code == 404 and _error(response)["code"] == "not_found"

    def test_the_url_wins_over_the_header(self, user, org, other_org):
        make_member(other_org, user.email, "viewer")
        response = _client(user, organization="globex").get("/api/v1/orgs/acme/quota")
        assert response.status_code == 200  # an owner in acme; a viewer could not see it

    def test_a_user_in_no_organization_is_told_so(self, db):
        response = _sign_up("nobody@example.test").get("/api/v1/workflows")
        assert response.status_code == 404 and _error(response)["code"] == "not_found"
