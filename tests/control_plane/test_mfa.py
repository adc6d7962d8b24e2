"""TOTP enrolment, two-step login, backup codes, replay and disable."""

from __future__ import annotations

import time

import pyotp
import pytest
from django.db import connection
from rest_framework.test import APIClient

from control_plane.users.models import LoginAttempt, MFABackupCode, MFADevice, UserSession
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


def _code(secret: str, steps_ahead: int = 0) -> str:
    totp = pyotp.TOTP(secret)
    return totp.generate_otp(int(time.time()) // totp.interval + steps_ahead)


def _error(response) -> dict:
    return response.json()["error"]


@pytest.fixture
def enrolled(api, user):
    """Alice with MFA on: (secret, backup codes)."""
    enrolment = api.post("/api/v1/users/me/mfa/totp").json()
    confirmed = api.post("/api/v1/users/me/mfa/totp/confirm", {"code": _code(enrolment["secret"])})
    assert confirmed.status_code == 200
    # The confirming code is spent; later tests log in with the next step's code.
    return enrolment["secret"], confirmed.json()["backup_codes"]


def _password_step(client: APIClient, email: str = "alice@acme.test") -> str:
    response = client.post("/api/v1/auth/login", {"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["mfa_required"] is True and "token" not in body
    return body["mfa_token"]


class TestEnrolment:
    def test_enrol_gives_uri_and_qr_then_confirm_turns_mfa_on(self, api, user):
        assert api.get("/api/v1/users/me/mfa").json()["enabled"] is False
        response = api.post("/api/v1/users/me/mfa/totp")
        assert response.status_code == 201
        body = response.json()
        assert body["provisioning_uri"].startswith("otpauth://totp/FlowPilot:alice%40acme.test?")
        assert f"secret={body['secret']}" in body["provisioning_uri"]
        assert body["qr_svg"].startswith("<svg") and "</svg>" in body["qr_svg"]

        wrong = api.post("/api/v1/users/me/mfa/totp/confirm", {"code": "000000"})
        assert wrong.status_code == 400 and _error(wrong)["fields"]["code"]
        assert api.get("/api/v1/users/me/mfa").json()["enabled"] is False

        confirmed = api.post("/api/v1/users/me/mfa/totp/confirm", {"code": _code(body["secret"])})
        codes = confirmed.json()["backup_codes"]
        assert len(codes) == 10 and len(set(codes)) == 10
        status = api.get("/api/v1/users/me/mfa").json()
        assert status["enabled"] is True and status["backup_codes_remaining"] == 10
        assert api.get("/api/v1/users/me").json()["mfa_enabled"] is True

    def test_secret_and_backup_codes_are_not_stored_in_the_clear(self, enrolled, user):
        secret, codes = enrolled
        with connection.cursor() as cursor:
            cursor.execute("SELECT secret FROM users_mfadevice WHERE user_id = %s", [user.pk])
            (stored,) = cursor.fetchone()
        assert secret not in stored and stored.startswith("gAAAA")  # a Fernet token
        assert MFADevice.objects.get(user=user).secret == secret
        hashes = set(MFABackupCode.objects.values_list("code_hash", flat=True))
        assert not hashes & {c for code in codes for c in (code, code.replace("-", ""))}

    def test_enrol_again_while_on_is_a_conflict(self, api, enrolled):
        response = api.post("/api/v1/users/me/mfa/totp")
        assert response.status_code == 409

    def test_confirm_without_enrolment_is_a_conflict(self, api):
        assert api.post("/api/v1/users/me/mfa/totp/confirm", {"code": "123456"}).status_code == 409

    def test_a_new_enrolment_replaces_an_unconfirmed_one(self, api, user):
        first = api.post("/api/v1/users/me/mfa/totp").json()["secret"]
        second = api.post("/api/v1/users/me/mfa/totp").json()["secret"]
        assert MFADevice.objects.filter(user=user).count() == 1
        assert api.post(
            "/api/v1/users/me/mfa/totp/confirm", {"code": _code(first)}
        ).status_code in (
            400,
            200,  # the two secrets could share a code by chance; the second must work regardless
        )
        assert MFADevice.objects.get(user=user).secret == second


class TestTwoStepLogin:
    def test_password_then_totp_code(self, enrolled):
        secret, _ = enrolled
        client = APIClient()
        mfa_token = _password_step(client)
        assert not UserSession.objects.filter(kind="api", user_agent="").exists()
        response = client.post(
            "/api/v1/auth/login/mfa", {"mfa_token": mfa_token, "code": _code(secret, 1)}
        )
        assert response.status_code == 200 and response.json()["token"].startswith("fps_")
        reasons = list(LoginAttempt.objects.order_by("pk").values_list("reason", flat=True))
        assert reasons == ["mfa_required", "ok"]
        # The challenge is single use.
        again = client.post(
            "/api/v1/auth/login/mfa", {"mfa_token": mfa_token, "code": _code(secret, 1)}
        )
        assert again.status_code == 400

    def test_a_totp_code_is_accepted_once(self, enrolled):
        secret, _ = enrolled
        code = _code(secret, 1)
        first = APIClient().post(
            "/api/v1/auth/login/mfa", {"mfa_token": _password_step(APIClient()), "code": code}
        )
        assert first.status_code == 200
        replay = APIClient().post(
            "/api/v1/auth/login/mfa", {"mfa_token": _password_step(APIClient()), "code": code}
        )
        assert replay.status_code == 400 and _error(replay)["code"] == "invalid_code"

    def test_wrong_code_is_recorded_and_counts_towards_lockout(self, enrolled):
        client = APIClient()
        mfa_token = _password_step(client)
        for _ in range(5):
            response = client.post(
                "/api/v1/auth/login/mfa", {"mfa_token": mfa_token, "code": "12345"}
            )
            assert response.status_code == 400 and _error(response)["fields"]["code"]
        assert LoginAttempt.objects.filter(reason="bad_mfa_code").count() == 5
        locked = client.post(
            "/api/v1/auth/login/mfa", {"mfa_token": mfa_token, "code": _code(enrolled[0], 1)}
        )
        assert locked.status_code == 429 and "Retry-After" in locked

    def test_backup_code_works_once(self, enrolled, api):
        _, codes = enrolled
        client = APIClient()
        used = client.post(
            "/api/v1/auth/login/mfa",
            {"mfa_token": _password_step(client), "code": codes[0].upper()},
        )
        assert used.status_code == 200
        reused = client.post(
            "/api/v1/auth/login/mfa", {"mfa_token": _password_step(client), "code": codes[0]}
        )
        assert reused.status_code == 400
        assert api.get("/api/v1/users/me/mfa").json()["backup_codes_remaining"] == 9

    def test_forged_or_expired_challenge(self, enrolled):
        from control_plane.users.models import UserToken

        client = APIClient()
        response = client.post("/api/v1/auth/login/mfa", {"mfa_token": "forged", "code": "123456"})
        assert response.status_code == 400 and _error(response)["code"] == "invalid_token"
        mfa_token = _password_step(client)
        UserToken.objects.update(expires_at="2000-01-01T00:00:00Z")
        response = client.post(
            "/api/v1/auth/login/mfa", {"mfa_token": mfa_token, "code": _code(enrolled[0], 1)}
        )
        assert response.status_code == 400

    def test_web_client_gets_the_cookie_after_the_second_step(self, enrolled):
        client = APIClient()
        mfa_token = _password_step(client)
        response = client.post(
            "/api/v1/auth/login/mfa",
            {"mfa_token": mfa_token, "code": _code(enrolled[0], 1), "client": "web"},
        )
        assert response.status_code == 200 and "sessionid" in response.cookies
        assert client.get("/api/v1/users/me").status_code == 200


class TestBackupCodesAndDisable:
    def test_regenerate_replaces_the_codes(self, api, enrolled):
        secret, old = enrolled
        response = api.post(
            "/api/v1/users/me/mfa/backup-codes", {"password": PASSWORD, "code": _code(secret, 1)}
        )
        assert response.status_code == 200
        new = response.json()["backup_codes"]
        assert not set(new) & set(old)
        client = APIClient()
        stale = client.post(
            "/api/v1/auth/login/mfa", {"mfa_token": _password_step(client), "code": old[1]}
        )
        assert stale.status_code == 400

    @pytest.mark.parametrize(
        ("password", "use_code", "field"),
        [("wrong", True, "password"), (PASSWORD, False, "code")],
    )
    def test_disable_needs_password_and_code(self, api, enrolled, password, use_code, field):
        secret, _ = enrolled
        code = _code(secret, 1) if use_code else "000000"
        response = api.post("/api/v1/users/me/mfa/disable", {"password": password, "code": code})
        assert response.status_code == 400 and field in _error(response)["fields"]
        assert api.get("/api/v1/users/me/mfa").json()["enabled"] is True

    def test_disable_with_a_backup_code(self, api, enrolled, user):
        _, codes = enrolled
        response = api.post(
            "/api/v1/users/me/mfa/disable", {"password": PASSWORD, "code": codes[3]}
        )
        assert response.status_code == 204
        assert not MFADevice.objects.filter(user=user).exists()
        assert not MFABackupCode.objects.filter(user=user).exists()
        login = APIClient().post("/api/v1/auth/login", {"email": user.email, "password": PASSWORD})
        assert login.json()["mfa_required"] is False

    def test_disable_when_off_is_a_conflict(self, api):
        response = api.post("/api/v1/users/me/mfa/disable", {"password": PASSWORD, "code": "1"})
        assert response.status_code == 409

    def test_mfa_endpoints_need_a_signed_in_user(self):
        for path in ["/api/v1/users/me/mfa", "/api/v1/users/me/mfa/totp"]:
            assert APIClient().post(path).status_code == 401
            assert APIClient().get(path).status_code == 401
