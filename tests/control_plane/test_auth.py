"""Register, verify, log in (token and cookie), lockout, logout, password change and reset."""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connections
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from control_plane.users.models import LoginAttempt, User, UserSession, UserToken
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

STRONG = "violet-harbour-lantern-42"


def _token_from(message) -> str:
    return re.search(r"token=([^\s]+)", message.body).group(1).replace("%3A", ":")


def _login(http: APIClient, email: str, password: str = PASSWORD, **extra):
    return http.post("/api/v1/auth/login", {"email": email, "password": password, **extra})


def _error(response) -> dict:
    assert response["Content-Type"].startswith("application/json"), response.content
    return response.json()["error"]


@pytest.fixture
def client():
    return APIClient(
        REMOTE_ADDR="10.0.0.1", HTTP_USER_AGENT="Mozilla/5.0 (X11; Linux) Firefox/140.0"
    )


@pytest.fixture
def alice(db):
    return User.objects.create_user("alice@acme.test", PASSWORD, name="Alice", email_verified=True)


class TestRegisterAndVerify:
    def test_register_sends_a_verification_link_that_works_once(self, client):
        response = client.post(
            "/api/v1/auth/register",
            {"email": "New.User@Acme.test", "password": STRONG, "name": "New"},
        )
        assert response.status_code == 202
        user = User.objects.get(email="new.user@acme.test")
        assert not user.email_verified and user.check_password(STRONG)
        assert len(mail.outbox) == 1 and mail.outbox[0].to == ["new.user@acme.test"]
        token = _token_from(mail.outbox[0])

        blocked = _login(client, "new.user@acme.test", STRONG)
        assert blocked.status_code == 403 and _error(blocked)["code"] == "email_not_verified"

        assert client.post("/api/v1/auth/email/verify", {"token": token}).status_code == 200
        user.refresh_from_db()
        assert user.email_verified and user.email_verified_at is not None
        again = client.post("/api/v1/auth/email/verify", {"token": token})
        assert again.status_code == 400 and _error(again)["code"] == "invalid_token"
        assert _login(client, "new.user@acme.test", STRONG).status_code == 200

    def test_register_with_a_known_address_answers_the_same_and_mails_the_owner(
        self, client, alice
    ):
        fresh = client.post("/api/v1/auth/register", {"email": "bob@acme.test", "password": STRONG})
        known = client.post(
            "/api/v1/auth/register", {"email": "ALICE@acme.test", "password": STRONG}
        )
        assert fresh.status_code == known.status_code == 202
        assert fresh.json() == known.json()
        assert User.objects.filter(email="alice@acme.test").count() == 1
        alice.refresh_from_db()
        assert alice.check_password(PASSWORD)  # unchanged
        assert "already has one" in mail.outbox[-1].body and mail.outbox[-1].to == [alice.email]

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"email": "x@acme.test", "password": "short"}, "password"),
            ({"email": "x@acme.test", "password": "12345678901"}, "password"),
            ({"email": "x@acme.test", "password": "password123"}, "password"),
            ({"email": "not-an-email", "password": STRONG}, "email"),
            ({"password": STRONG}, "email"),
            ({"email": "x@acme.test"}, "password"),
        ],
    )
    def test_register_rejects_bad_input_by_field(self, client, body, field):
        response = client.post("/api/v1/auth/register", body)
        assert response.status_code == 400
        assert field in _error(response)["fields"]
        assert not User.objects.filter(email="x@acme.test").exists()

    def test_verification_tokens_expire_and_resist_tampering(self, client):
        client.post("/api/v1/auth/register", {"email": "late@acme.test", "password": STRONG})
        token = _token_from(mail.outbox[0])
        UserToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
        assert client.post("/api/v1/auth/email/verify", {"token": token}).status_code == 400
        tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        assert client.post("/api/v1/auth/email/verify", {"token": tampered}).status_code == 400
        assert client.post("/api/v1/auth/email/verify", {"token": ""}).status_code == 400
        assert not User.objects.get(email="late@acme.test").email_verified

    def test_resend_does_not_reveal_accounts_and_is_rate_limited(self, client, alice):
        client.post("/api/v1/auth/register", {"email": "new@acme.test", "password": STRONG})
        answers = {
            client.post("/api/v1/auth/email/verify/resend", {"email": email}).status_code
            for email in ["new@acme.test", "nobody@acme.test", alice.email]
        }
        assert answers == {202}
        assert [m.to for m in mail.outbox] == [["new@acme.test"], ["new@acme.test"]]
        for _ in range(10):
            client.post("/api/v1/auth/email/verify/resend", {"email": "new@acme.test"})
        assert len(mail.outbox) == 5  # AUTH_MAX_EMAILS_PER_HOUR


class TestLogin:
    def test_api_login_returns_a_bearer_token_for_a_new_session(self, client, alice):
        response = _login(client, "Alice@Acme.test ")
        assert response.status_code == 200, response.json()
        body = response.json()
        assert body["mfa_required"] is False and body["user"]["email"] == alice.email
        assert body["token"].startswith("fps_")
        session = UserSession.objects.get(user=alice)
        assert session.kind == "api" and session.device == "Firefox on Linux"
        assert str(session.ip) == "10.0.0.1" and session.token_hash != body["token"]
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {body['token']}")
        assert client.get("/api/v1/users/me").json()["email"] == alice.email
        attempt = LoginAttempt.objects.get()
        assert (attempt.email, attempt.success, attempt.reason) == (alice.email, True, "ok")

    def test_web_login_sets_a_session_cookie_and_no_token(self, alice):
        client = APIClient(enforce_csrf_checks=True)
        response = _login(client, alice.email, client="web")
        assert response.status_code == 200 and "token" not in response.json()
        assert "sessionid" in response.cookies and "csrftoken" in response.cookies
        assert client.get("/api/v1/users/me").json()["email"] == alice.email
        # Writes with the cookie need the CSRF token.
        no_csrf = client.patch("/api/v1/users/me", {"name": "A"}, format="json")
        assert no_csrf.status_code == 403
        csrf = response.cookies["csrftoken"].value
        ok = client.patch("/api/v1/users/me", {"name": "A"}, format="json", HTTP_X_CSRFTOKEN=csrf)
        assert ok.status_code == 200 and ok.json()["name"] == "A"
        assert UserSession.objects.get(user=alice).kind == "web"

    @pytest.mark.parametrize(
        "email", ["alice@acme.test", "nobody@acme.test"], ids=["wrong-password", "unknown"]
    )
    def test_wrong_password_and_unknown_user_look_the_same(self, client, alice, email):
        response = _login(client, email, "not the password")
        assert response.status_code == 401
        assert _error(response)["code"] == "invalid_credentials"
        assert _error(response)["message"] == "Email or password is not correct."
        assert LoginAttempt.objects.get().reason == "bad_credentials"
        assert not UserSession.objects.exists()

    def test_inactive_user_cannot_log_in(self, client, alice):
        User.objects.filter(pk=alice.pk).update(is_active=False)
        assert _login(client, alice.email).status_code == 401
        assert LoginAttempt.objects.get().reason == "inactive"

    @pytest.mark.parametrize(
        "body",
        [
            {},
            {"email": "a@b.c"},
            {"email": ["x"], "password": 1},
            {"email": "a", "password": "b", "client": "tv"},
        ],
    )
    def test_malformed_login_is_a_400_with_fields(self, client, body):
        response = client.post("/api/v1/auth/login", body, format="json")
        assert response.status_code == 400 and _error(response)["fields"]

    def test_not_json_is_a_400(self, client):
        response = client.generic(
            "POST", "/api/v1/auth/login", "{not json", content_type="application/json"
        )
        assert response.status_code == 400 and _error(response)["code"] == "parse_error"

    def test_a_stale_token_does_not_block_login(self, client, alice):
        client.credentials(HTTP_AUTHORIZATION="Bearer fps_revoked")
        assert _login(client, alice.email).status_code == 200


class TestLockout:
    def test_five_failures_lock_the_account_whatever_the_password(self, client, alice):
        for _ in range(5):
            assert _login(client, alice.email, "wrong").status_code == 401
        locked = _login(client, alice.email)  # the right password
        assert locked.status_code == 429
        error = _error(locked)
        assert error["code"] == "too_many_attempts"
        retry = int(locked["Retry-After"])
        assert 0 < retry <= 15 * 60 and error["details"][0]["retry_after_seconds"] == retry
        assert LoginAttempt.objects.filter(reason="account_locked").count() == 1
        # Another account from the same IP is not affected.
        User.objects.create_user("bob@acme.test", PASSWORD, email_verified=True)
        assert _login(client, "bob@acme.test").status_code == 200

    def test_the_lock_lifts_when_the_failures_leave_the_window(self, client, alice):
        for _ in range(5):
            _login(client, alice.email, "wrong")
        LoginAttempt.objects.update(created_at=timezone.now() - timedelta(minutes=15, seconds=1))
        assert _login(client, alice.email).status_code == 200

    def test_a_success_resets_the_account_count(self, client, alice):
        for _ in range(4):
            _login(client, alice.email, "wrong")
        assert _login(client, alice.email).status_code == 200
        for _ in range(4):
            assert _login(client, alice.email, "wrong").status_code == 401
        assert _login(client, alice.email).status_code == 200

    @override_settings(LOGIN_MAX_FAILURES_PER_IP=8, LOGIN_MAX_FAILURES_PER_ACCOUNT=100)
    def test_too_many_failures_from_one_ip_lock_that_ip(self, client, alice):
        for n in range(8):
            assert _login(client, f"user{n}@acme.test", "wrong").status_code == 401
        locked = _login(client, alice.email)
        assert (
            locked.status_code == 429 and LoginAttempt.objects.filter(reason="ip_locked").exists()
        )
        elsewhere = APIClient(REMOTE_ADDR="10.0.0.2")
        assert _login(elsewhere, alice.email).status_code == 200

    @override_settings(LOGIN_MAX_FAILURES_PER_ACCOUNT=3)
    def test_the_numbers_are_settings(self, client, alice):
        for _ in range(3):
            _login(client, alice.email, "wrong")
        assert _login(client, alice.email).status_code == 429

    @pytest.mark.django_db(transaction=True)
    def test_concurrent_guesses_cannot_race_past_the_lock(self, alice):
        """Twenty parallel wrong guesses: exactly five are checked, the rest are refused."""
        statuses: list[int] = []

        def guess():
            try:
                response = _login(APIClient(REMOTE_ADDR="10.9.9.9"), alice.email, "wrong")
                statuses.append(response.status_code)
            finally:
                connections.close_all()

        threads = [threading.Thread(target=guess) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(statuses) == [401] * 5 + [429] * 15
        assert LoginAttempt.objects.filter(reason="bad_credentials").count() == 5


class TestSessions:
    def _sign_in(self, email: str, agent: str) -> APIClient:
        client = APIClient(HTTP_USER_AGENT=agent)
        token = _login(client, email).json()["token"]
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        return client

    def test_list_and_revoke_one_session(self, alice):
        laptop = self._sign_in(alice.email, "Mozilla/5.0 (Macintosh; Mac OS X) Safari/605")
        phone = self._sign_in(alice.email, "Mozilla/5.0 (iPhone) Safari/604")
        listed = laptop.get("/api/v1/users/me/sessions").json()["results"]
        assert [(row["device"], row["current"]) for row in listed] == [
            ("Safari on iOS", False),
            ("Safari on macOS", True),
        ]
        assert all("token" not in key for row in listed for key in row)
        phone_id = listed[0]["id"]
        assert laptop.delete(f"/api/v1/users/me/sessions/{phone_id}").status_code == 204
        revoked = phone.get("/api/v1/users/me")
        assert revoked.status_code == 401 and revoked["WWW-Authenticate"].startswith("Bearer")
        assert laptop.get("/api/v1/users/me").status_code == 200
        assert laptop.delete(f"/api/v1/users/me/sessions/{phone_id}").status_code == 404
        active = laptop.get("/api/v1/users/me/sessions?active=true").json()["results"]
        assert [row["id"] for row in active] != [phone_id] and len(active) == 1

    def test_revoke_all_others_keeps_the_current_one(self, alice):
        clients = [self._sign_in(alice.email, f"agent/{n}") for n in range(3)]
        response = clients[0].post("/api/v1/users/me/sessions/revoke-others")
        assert response.status_code == 200 and response.json()["revoked"] == 2
        assert [c.get("/api/v1/users/me").status_code for c in clients] == [200, 401, 401]

    def test_another_users_session_is_not_found(self, alice):
        bob = User.objects.create_user("bob@acme.test", PASSWORD, email_verified=True)
        bobs = self._sign_in(bob.email, "bob/1")
        alices = self._sign_in(alice.email, "alice/1")
        bob_session = UserSession.objects.get(user=bob)
        assert alices.delete(f"/api/v1/users/me/sessions/{bob_session.pk}").status_code == 404
        assert bob_session.pk not in [
            row["id"] for row in alices.get("/api/v1/users/me/sessions").json()["results"]
        ]
        assert bobs.get("/api/v1/users/me").status_code == 200

    def test_an_expired_session_stops_working(self, alice):
        client = self._sign_in(alice.email, "agent/1")
        UserSession.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
        assert client.get("/api/v1/users/me").status_code == 401

    def test_a_revoked_cookie_session_is_signed_out(self, alice):
        client = APIClient()
        _login(client, alice.email, client="web")
        UserSession.objects.update(revoked_at=timezone.now())
        assert client.get("/api/v1/users/me").status_code == 401

    def test_logout_ends_the_session(self, alice):
        client = self._sign_in(alice.email, "agent/1")
        assert client.post("/api/v1/auth/logout").status_code == 204
        assert UserSession.objects.get().revoked_reason == "logout"
        assert client.get("/api/v1/users/me").status_code == 401

    def test_activity_is_recorded_at_most_once_a_minute(self, alice):
        client = self._sign_in(alice.email, "agent/1")
        long_ago = timezone.now() - timedelta(hours=1)
        UserSession.objects.update(last_seen_at=long_ago)
        client.get("/api/v1/users/me")
        seen = UserSession.objects.get().last_seen_at
        assert seen > long_ago
        client.get("/api/v1/users/me")
        assert UserSession.objects.get().last_seen_at == seen
        alice.refresh_from_db()
        assert alice.last_active_at >= seen

    def test_sign_in_activity_lists_my_attempts_only(self, client, alice):
        _login(client, alice.email, "wrong")
        _login(client, "bob@acme.test", "wrong")
        me = self._sign_in(alice.email, "agent/1")
        rows = me.get("/api/v1/users/me/login-attempts").json()["results"]
        assert [row["reason"] for row in rows] == ["ok", "bad_credentials"]


class TestProfile:
    def test_update_profile(self, api):
        response = api.patch(
            "/api/v1/users/me",
            {
                "name": "Alice L.",
                "time_zone": "Europe/Paris",
                "locale": "fr-FR",
                "avatar_url": "https://cdn.acme.test/a.png",
            },
            format="json",
        )
        assert response.status_code == 200
        assert response.json()["time_zone"] == "Europe/Paris"

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"time_zone": "Mars/Olympus"}, "time_zone"),
            ({"avatar_url": "javascript:alert(1)"}, "avatar_url"),
            ({"locale": "<script>"}, "locale"),
            ({"name": "x" * 200}, "name"),
        ],
    )
    def test_bad_profile_values_are_400_by_field(self, api, body, field):
        response = api.patch("/api/v1/users/me", body, format="json")
        assert response.status_code == 400 and field in _error(response)["fields"]

    def test_email_is_not_changed_through_the_profile(self, api, user):
        api.patch("/api/v1/users/me", {"email": "evil@x.test", "is_staff": True}, format="json")
        user.refresh_from_db()
        assert user.email == "alice@acme.test" and not user.is_staff

    def test_anonymous_gets_401(self):
        response = APIClient().get("/api/v1/users/me")
        assert response.status_code == 401 and _error(response)["code"] == "not_authenticated"


class TestPasswordChange:
    def test_change_signs_out_other_sessions_and_keeps_this_one(self, alice):
        clients = []
        for n in range(2):
            client = APIClient(HTTP_USER_AGENT=f"agent/{n}")
            client.credentials(
                HTTP_AUTHORIZATION=f"Bearer {_login(client, alice.email).json()['token']}"
            )
            clients.append(client)
        response = clients[0].post(
            "/api/v1/users/me/password",
            {"current_password": PASSWORD, "new_password": STRONG},
        )
        assert response.status_code == 200
        assert [c.get("/api/v1/users/me").status_code for c in clients] == [200, 401]
        alice.refresh_from_db()
        assert alice.check_password(STRONG)
        assert "password" in mail.outbox[-1].subject.lower()

    def test_web_session_survives_its_own_password_change(self, alice):
        client = APIClient()
        _login(client, alice.email, client="web")
        response = client.post(
            "/api/v1/users/me/password", {"current_password": PASSWORD, "new_password": STRONG}
        )
        assert response.status_code == 200
        assert client.get("/api/v1/users/me").status_code == 200

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"current_password": "wrong", "new_password": STRONG}, "current_password"),
            ({"current_password": PASSWORD, "new_password": "123"}, "new_password"),
            ({"current_password": PASSWORD}, "new_password"),
        ],
    )
    def test_refusals(self, api, user, body, field):
        response = api.post("/api/v1/users/me/password", body)
        assert response.status_code == 400 and field in _error(response)["fields"]
        user.refresh_from_db()
        assert user.check_password(PASSWORD)


class TestPasswordReset:
    def test_reset_flow_revokes_every_session_and_the_link(self, client, alice):
        signed_in = APIClient()
        signed_in.credentials(
            HTTP_AUTHORIZATION=f"Bearer {_login(client, alice.email).json()['token']}"
        )
        assert client.post("/api/v1/auth/password/reset", {"email": alice.email}).status_code == 202
        token = _token_from(mail.outbox[-1])
        weak = client.post(
            "/api/v1/auth/password/reset/confirm", {"token": token, "password": "123"}
        )
        assert weak.status_code == 400 and "password" in _error(weak)["fields"]
        done = client.post(
            "/api/v1/auth/password/reset/confirm", {"token": token, "password": STRONG}
        )
        assert done.status_code == 200
        assert signed_in.get("/api/v1/users/me").status_code == 401
        assert UserSession.objects.get().revoked_reason == "password_reset"
        reused = client.post(
            "/api/v1/auth/password/reset/confirm", {"token": token, "password": STRONG + "x"}
        )
        assert reused.status_code == 400 and _error(reused)["code"] == "invalid_token"
        assert _login(client, alice.email, STRONG).status_code == 200

    def test_unknown_address_gets_the_same_answer_and_no_mail(self, client, alice):
        known = client.post("/api/v1/auth/password/reset", {"email": alice.email})
        unknown = client.post("/api/v1/auth/password/reset", {"email": "nobody@acme.test"})
        assert (known.status_code, known.json()) == (unknown.status_code, unknown.json())
        assert [m.to for m in mail.outbox] == [[alice.email]]

    def test_a_new_password_voids_older_links(self, client, alice):
        client.post("/api/v1/auth/password/reset", {"email": alice.email})
        client.post("/api/v1/auth/password/reset", {"email": alice.email})
        first, second = (_token_from(m) for m in mail.outbox)
        ok = client.post(
            "/api/v1/auth/password/reset/confirm", {"token": second, "password": STRONG}
        )
        assert ok.status_code == 200
        stale = client.post(
            "/api/v1/auth/password/reset/confirm", {"token": first, "password": STRONG}
        )
        assert stale.status_code == 400

    def test_expired_link_is_refused(self, client, alice):
        client.post("/api/v1/auth/password/reset", {"email": alice.email})
        UserToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
        token = _token_from(mail.outbox[-1])
        response = client.post(
            "/api/v1/auth/password/reset/confirm", {"token": token, "password": STRONG}
        )
        assert response.status_code == 400
        alice.refresh_from_db()
        assert alice.check_password(PASSWORD)

    def test_a_verification_token_is_not_a_reset_token(self, client):
        client.post("/api/v1/auth/register", {"email": "new@acme.test", "password": STRONG})
        token = _token_from(mail.outbox[-1])
        response = client.post(
            "/api/v1/auth/password/reset/confirm", {"token": token, "password": STRONG + "!"}
        )
        assert response.status_code == 400

    def test_mail_failure_is_not_shown_to_the_caller(self, client, alice, settings):
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_PORT = 1  # nothing listens there
        response = client.post("/api/v1/auth/password/reset", {"email": alice.email})
        assert response.status_code == 202


def test_async_mail_is_sent_after_commit_off_the_request(
    client, alice, settings, django_capture_on_commit_callbacks
):
    settings.EMAIL_SEND_ASYNC = True
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post("/api/v1/auth/password/reset", {"email": alice.email})
    assert response.status_code == 202 and mail.outbox == []  # nothing before the commit
    for callback in callbacks:
        callback()
    deadline = time.monotonic() + 10
    while not mail.outbox and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [m.to for m in mail.outbox] == [[alice.email]]
