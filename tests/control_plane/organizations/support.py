"""Helpers for the organization API tests: a client that fails a test on any 500 or any error
outside the one JSON error shape, and short ways to read members and invitations."""

from __future__ import annotations

from rest_framework.test import APIClient

from control_plane.core.tenancy import tenant_context
from control_plane.organizations.models import (
    Invitation,
    Organization,
    OrganizationMember,
)
from control_plane.users.models import User
from tests.conftest import bearer_token
from tests.factories import PASSWORD, make_member

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


def _create_role(client, key: str = "reader", permissions=("workflow.read", "member.read")):
    return client.post(
        "/api/v1/roles",
        {"key": key, "name": key.title(), "permissions": list(permissions)},
        format="json",
    )


def _invite(client, email: str = "bob@example.test", role: str = "editor", **extra):
    body = {"email": email, "role": role, **extra}
    return client.post("/api/v1/invitations", body, format="json")
