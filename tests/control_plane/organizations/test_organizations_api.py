"""Organizations, members, departments, quotas and naming the organization, through the API."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from control_plane.executions.models import WorkflowExecution
from control_plane.organizations.models import (
    PLAN_LIMITS,
    Department,
    Organization,
    OrganizationMember,
    UsageQuota,
)
from control_plane.organizations.permissions import PERMISSIONS
from control_plane.users.models import User
from tests.control_plane.organizations.support import (
    _client,
    _create_role,
    _emails,
    _error,
    _invitation,
    _invite,
    _member_client,
    _member_id,
    _membership,
    _results,
    _sign_up,
    _status_codes,
)
from tests.factories import make_member, make_organization, run_workflow

pytestmark = pytest.mark.django_db


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
