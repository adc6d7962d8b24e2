"""The admin signs in through FlowPilot's login (lockout, MFA, tracked session) and shows the
identity tables without their secrets."""

from __future__ import annotations

import time

import pyotp
import pytest
from django.test import Client

from control_plane.users import mfa
from control_plane.users.models import LoginAttempt, MFADevice, OAuthConnection, User, UserSession
from control_plane.users.sessions import session_create
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(db):
    return User.objects.create_superuser("root@flowpilot.test", PASSWORD)


def _admin_login(client: Client, email: str, password: str = PASSWORD, code: str = ""):
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": email, "password": password, "code": code},
    )


def test_admin_login_creates_a_revocable_session(staff):
    client = Client()
    response = _admin_login(client, staff.email)
    assert response.status_code == 302 and response["Location"] == "/admin/"
    session = UserSession.objects.get(user=staff)
    assert session.kind == "web"
    assert client.get("/admin/").status_code == 200
    session.revoked_at = session.created_at
    session.save()
    assert client.get("/admin/").status_code == 302  # back to the login page


def test_admin_login_is_locked_out_like_the_api(staff):
    client = Client()
    for _ in range(5):
        assert _admin_login(client, staff.email, "wrong").status_code == 200
    response = _admin_login(client, staff.email)
    assert response.status_code == 200 and b"Too many failed sign-in attempts" in response.content
    assert LoginAttempt.objects.filter(reason="account_locked").count() == 1


def test_admin_login_needs_the_second_factor(staff):
    enrolment = mfa.totp_enrol(user=staff)
    totp = pyotp.TOTP(enrolment.secret)
    mfa.totp_confirm(user=staff, code=totp.now())
    client = Client()
    assert b"Enter the code" in _admin_login(client, staff.email).content
    next_code = totp.generate_otp(int(time.time()) // 30 + 1)
    assert _admin_login(client, staff.email, code=next_code).status_code == 302


def test_non_staff_cannot_use_the_admin(user):
    response = _admin_login(Client(), user.email)
    assert response.status_code == 200
    assert not UserSession.objects.filter(user=user, revoked_at__isnull=True).exists()


def test_every_identity_panel_renders_without_secrets(staff, user):
    enrolment = mfa.totp_enrol(user=user)
    _, token = session_create(user=user, kind="api", ip="10.1.1.1", user_agent="curl/8.0")
    OAuthConnection.objects.create(
        user=user, provider="acme-sso", subject="u-1", access_token="at-SECRET-123"
    )
    LoginAttempt.objects.create(email=user.email, success=False, reason="bad_credentials")
    client = Client()
    _admin_login(client, staff.email)
    session = UserSession.objects.get(user=user)
    device = MFADevice.objects.get(user=user)
    pages = [
        "/admin/users/user/",
        f"/admin/users/user/{user.pk}/change/",
        "/admin/users/usersession/",
        f"/admin/users/usersession/{session.pk}/change/",
        "/admin/users/loginattempt/",
        "/admin/users/mfadevice/",
        f"/admin/users/mfadevice/{device.pk}/change/",
        "/admin/users/oauthconnection/",
    ]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
        html = response.content.decode()
        for secret in (enrolment.secret, token, session.token_hash, "at-SECRET-123", user.password):
            assert secret not in html, (page, secret[:6])


def test_admin_actions_revoke_and_unlock(staff, user):
    session_create(user=user, kind="api", ip=None, user_agent="x")
    LoginAttempt.objects.create(email=user.email, success=False, reason="bad_credentials")
    client = Client()
    _admin_login(client, staff.email)
    for action in ("revoke_all_sessions", "unlock"):
        response = client.post(
            "/admin/users/user/", {"action": action, "_selected_action": [user.pk]}
        )
        assert response.status_code == 302
    assert UserSession.objects.get(user=user).revoked_reason == "revoked_by_admin"
    assert not LoginAttempt.objects.filter(email=user.email).exists()


def test_tenant_panels_show_every_organization(staff, published, other_org):
    """Staff work across organizations: tenant tables in the admin are a system read."""
    from tests.factories import THREE_STEPS, make_member, make_published_workflow, run_workflow

    mallory = make_member(other_org, "mallory@globex.test")
    make_published_workflow(other_org, mallory, THREE_STEPS, slug="globex-flow")
    run_workflow(published)
    client = Client()
    _admin_login(client, staff.email)
    listing = client.get("/admin/workflows/workflow/").content.decode()
    assert "triage" in listing and "globex-flow" in listing
    for page in [
        f"/admin/workflows/workflow/{published.pk}/change/",
        "/admin/executions/workflowexecution/",
        "/admin/executions/triggerevent/",
        "/admin/organizations/organization/",
        f"/admin/organizations/organization/{other_org.pk}/change/",
        "/admin/organizations/organizationmember/",
        "/admin/organizations/invitation/",
        "/admin/organizations/department/",
        "/admin/organizations/role/",
    ]:
        assert client.get(page).status_code == 200, page
