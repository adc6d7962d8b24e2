"""Invitations: create, list, revoke and accept, and every way accepting is refused."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote, unquote

import pytest
from django.core import mail
from django.utils import timezone

from control_plane.core.tenancy import tenant_context
from control_plane.organizations.models import (
    Invitation,
)
from control_plane.users.models import User
from tests.control_plane.organizations.support import (
    _client,
    _error,
    _invitation,
    _invite,
    _member_client,
    _membership,
    _results,
    _sign_up,
)
from tests.factories import make_member

pytestmark = pytest.mark.django_db


# -- invitations ---------------------------------------------------------------------------------


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
