"""Sign in with OpenID Connect, driven as a browser would: start on our API, follow the
authorization URL to a real local provider, bring its redirect back to our callback."""

from __future__ import annotations

import logging
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pyotp
import pytest
from django.db import connection as db
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from control_plane.users import oidc
from control_plane.users.models import (
    LoginAttempt,
    MFADevice,
    OAuthConnection,
    OAuthState,
    User,
)
from tests.conftest import bearer_token
from tests.factories import PASSWORD
from tests.fakes.oidc_provider import FakeOidcProvider, pkce_challenge

pytestmark = pytest.mark.django_db

PROVIDER = "acme-sso"
START = f"/api/v1/auth/oidc/{PROVIDER}/start"
CALLBACK_URL = f"http://testserver/api/v1/auth/oidc/{PROVIDER}/callback"
CONNECTIONS = "/api/v1/users/me/connections"
WEB_URL = "https://app.flowpilot.test"

GRACE = {"sub": "grace-1", "email": "grace@example.test", "email_verified": True, "name": "Grace"}


@pytest.fixture(autouse=True)
def _fresh_discovery():
    oidc.discovery_cache_clear()
    yield
    oidc.discovery_cache_clear()


@pytest.fixture
def provider():
    with FakeOidcProvider(redirect_uris=(CALLBACK_URL,)) as fake:
        config = {
            "issuer": fake.url,
            "client_id": fake.client_id,
            "client_secret": fake.client_secret,
            "scopes": "openid email profile",
        }
        with override_settings(OIDC_PROVIDERS={PROVIDER: config}, FLOWPILOT_WEB_URL=WEB_URL):
            yield fake


def _error(response, status: int, code: str) -> dict:
    """The one error shape, with this status and code."""
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code and body["error"]["message"]
    return body["error"]


def begin(browser: APIClient, /, **body) -> str:
    """POST start with `body` ({"next", "client"}); the authorization URL."""
    response = browser.post(START, body, format="json")
    assert response.status_code == 200, response.content
    return response.json()["authorization_url"]


def authorize(url: str) -> str:
    """The browser at the provider: its redirect back, as a path and query for our client."""
    response = httpx.get(url, follow_redirects=False)
    assert response.status_code == 302, response.text
    back = urlsplit(response.headers["location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == CALLBACK_URL
    return f"{back.path}?{back.query}"


def sign_in(
    browser: APIClient, provider: FakeOidcProvider, identity: dict | None = None, /, **body
):
    """The whole round trip, `identity` signing in at the provider; our callback's response."""
    if identity is not None:
        provider.next_identity = identity
    return browser.get(authorize(begin(browser, **body)))


def _raw(table: str, column: str, pk: int) -> str:
    with db.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [pk])
        return cursor.fetchone()[0]


class TestSignIn:
    def test_authorization_url_carries_state_nonce_and_pkce(self, provider):
        url = begin(APIClient())
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{provider.url}/authorize"
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        assert query["response_type"] == "code"
        assert query["client_id"] == provider.client_id
        assert query["redirect_uri"] == CALLBACK_URL
        assert query["scope"] == "openid email profile"
        assert query["code_challenge_method"] == "S256"
        state = OAuthState.objects.get()
        assert state.state_hash != query["state"] and len(state.state_hash) == 64
        assert state.nonce == query["nonce"]
        assert pkce_challenge(state.code_verifier) == query["code_challenge"]
        raw_verifier = _raw("users_oauthstate", "code_verifier", state.pk)
        assert raw_verifier != state.code_verifier and state.code_verifier not in raw_verifier

    def test_new_user_is_created_and_signed_in(self, provider):
        response = sign_in(APIClient(), provider, GRACE)
        assert response.status_code == 200, response.content
        body = response.json()
        assert body["mfa_required"] is False and body["token"].startswith("fps_")
        assert body["user"]["email"] == "grace@example.test" and body["user"]["name"] == "Grace"

        me = APIClient(HTTP_AUTHORIZATION=f"Bearer {body['token']}").get("/api/v1/users/me")
        assert me.status_code == 200 and me.json()["email"] == "grace@example.test"

        user = User.objects.get(email="grace@example.test")
        assert not user.has_usable_password() and user.email_verified
        link = OAuthConnection.objects.get(user=user)
        access, refresh, _ = provider.issued_tokens
        assert (link.provider, link.subject, link.email) == (PROVIDER, "grace-1", user.email)
        assert (link.access_token, link.refresh_token) == (access, refresh)
        assert link.scopes == "openid email profile" and link.last_login_at is not None
        assert link.token_expires_at > timezone.now() + timedelta(minutes=59)
        for column, plaintext in (("access_token", access), ("refresh_token", refresh)):
            stored = _raw("users_oauthconnection", column, link.pk)
            assert plaintext not in stored and stored.startswith("gAAAA")  # a Fernet token
        attempt = LoginAttempt.objects.get(user=user)
        assert attempt.success and attempt.reason == LoginAttempt.Reason.OK
        assert provider.client_auth == ["basic"]  # the default when both are offered

    def test_returning_user_signs_in_to_the_same_account(self, provider):
        first = sign_in(APIClient(), provider, GRACE).json()
        again = sign_in(APIClient(), provider, {**GRACE, "email": "grace@new.example.test"})
        assert again.status_code == 200
        assert again.json()["user"]["id"] == first["user"]["id"]
        assert again.json()["token"] != first["token"]
        link = OAuthConnection.objects.get()
        assert link.access_token == provider.issued_tokens[3]  # refreshed by the second sign-in
        assert link.email == "grace@new.example.test"
        assert User.objects.filter(email__startswith="grace").count() == 1

    def test_client_secret_post_when_it_is_all_the_provider_takes(self, provider):
        provider.auth_methods = ["client_secret_post"]
        assert sign_in(APIClient(), provider, GRACE).status_code == 200
        assert provider.client_auth == ["post"]

    def test_discovery_is_cached_and_keys_are_refetched_on_rotation(self, provider):
        assert sign_in(APIClient(), provider, GRACE).status_code == 200
        provider.rotate_key()
        response = sign_in(APIClient(), provider, {**GRACE, "sub": "ada", "email": "ada@x.test"})
        assert response.status_code == 200, response.content
        assert provider.requests.count("/.well-known/openid-configuration") == 1
        assert provider.requests.count("/jwks") == 2

    def test_an_unverified_address_makes_no_account(self, provider):
        """Else the address's real owner could later reset the password of an account that
        this outside identity keeps signing in to."""
        response = sign_in(APIClient(), provider, {**GRACE, "email_verified": False})
        _error(response, 403, "email_not_verified")
        assert not User.objects.filter(email="grace@example.test").exists()
        assert not OAuthConnection.objects.exists()

    def test_inactive_user_is_refused_like_a_password_login(self, provider):
        sign_in(APIClient(), provider, GRACE)
        User.objects.filter(email="grace@example.test").update(is_active=False)
        _error(sign_in(APIClient(), provider, GRACE), 401, "invalid_credentials")

    def test_no_email_claim(self, provider):
        _error(sign_in(APIClient(), provider, {"sub": "anon"}), 400, "email_required")

    def test_mfa_user_gets_the_same_challenge_as_a_password_login(self, provider, user):
        secret = pyotp.random_base32()
        MFADevice.objects.create(user=user, secret=secret, confirmed_at=timezone.now())
        identity = {"sub": "alice-1", "email": user.email, "email_verified": True}
        body = sign_in(APIClient(), provider, identity).json()
        assert body["mfa_required"] is True and "token" not in body
        second = APIClient().post(
            "/api/v1/auth/login/mfa",
            {"mfa_token": body["mfa_token"], "code": pyotp.TOTP(secret).now()},
            format="json",
        )
        assert second.status_code == 200 and second.json()["user"]["id"] == user.pk

    def test_web_client_gets_a_cookie_and_lands_on_next(self, provider):
        browser = APIClient()
        response = sign_in(browser, provider, GRACE, client="web", next="/workflows?tab=runs")
        assert response.status_code == 302
        assert response["Location"] == f"{WEB_URL}/workflows?tab=runs"
        assert browser.get("/api/v1/users/me").json()["email"] == "grace@example.test"

    def test_a_web_callback_opened_in_another_browser_does_not_sign_it_in(self, provider):
        attacker, victim = APIClient(), APIClient()
        provider.next_identity = GRACE
        callback = authorize(begin(attacker, client="web"))
        response = victim.get(callback)  # login CSRF: the victim opens the attacker's callback
        assert response.status_code == 200 and "sessionid" not in response.cookies
        _error(victim.get("/api/v1/users/me"), 401, "not_authenticated")


class TestExistingAccounts:
    def test_verified_address_links_the_existing_account(self, provider, user):
        identity = {"sub": "alice-1", "email": "Alice@Acme.TEST", "email_verified": True}
        response = sign_in(APIClient(), provider, identity)
        assert response.status_code == 200 and response.json()["user"]["id"] == user.pk
        assert OAuthConnection.objects.get(subject="alice-1").user == user
        user.refresh_from_db()
        assert user.check_password(PASSWORD)  # untouched

    def test_unverified_claim_does_not_take_over_an_account(self, provider, user):
        identity = {"sub": "mallory", "email": user.email, "email_verified": False}
        error = _error(sign_in(APIClient(), provider, identity), 409, "email_in_use")
        assert "password" in error["message"]
        assert not OAuthConnection.objects.exists()

    def test_an_account_whose_address_is_not_verified_is_not_linked(self, provider, user):
        User.objects.filter(pk=user.pk).update(email_verified=False)
        identity = {"sub": "alice-1", "email": user.email, "email_verified": True}
        _error(sign_in(APIClient(), provider, identity), 409, "email_in_use")
        assert not OAuthConnection.objects.exists()


class TestLinking:
    def test_signed_in_user_links_an_identity(self, provider, api, user):
        identity = {"sub": "alice-work", "email": "alice@corp.test", "email_verified": True}
        response = sign_in(api, provider, identity)
        assert response.status_code == 200, response.content
        body = response.json()
        assert body["provider"] == PROVIDER and body["subject"] == "alice-work"
        assert "access_token" not in body and "token" not in body
        link = OAuthConnection.objects.get(subject="alice-work")
        assert link.user == user and link.email == "alice@corp.test"
        # From now on the identity signs in to Alice's account.
        again = sign_in(APIClient(), provider, identity)
        assert again.json()["user"]["id"] == user.pk

    def test_web_user_links_and_lands_back_on_next(self, provider, user):
        browser = APIClient()
        credentials = {"email": user.email, "password": PASSWORD, "client": "web"}
        assert browser.post("/api/v1/auth/login", credentials, format="json").status_code == 200
        identity = {"sub": "alice-work", "email": "alice@corp.test"}
        response = sign_in(browser, provider, identity, client="web", next="/settings")
        assert response.status_code == 302 and response["Location"] == f"{WEB_URL}/settings"
        assert OAuthConnection.objects.get(subject="alice-work").user == user

    def test_identity_linked_to_someone_else_is_refused(self, provider, api, user):
        sign_in(APIClient(), provider, GRACE)  # Grace's own account
        _error(sign_in(api, provider, GRACE), 409, "identity_in_use")
        assert OAuthConnection.objects.get(subject="grace-1").user.email == "grace@example.test"

    def test_second_identity_at_the_same_provider_is_refused(self, provider, api, user):
        sign_in(api, provider, {"sub": "one", "email": "a@corp.test", "email_verified": True})
        response = sign_in(api, provider, {"sub": "two", "email": "b@corp.test"})
        _error(response, 409, "provider_already_linked")

    def test_a_link_request_is_finished_only_by_the_user_who_started_it(self, provider, api):
        provider.next_identity = GRACE
        callback = authorize(begin(api))  # Alice asks to link ...
        _error(APIClient().get(callback), 400, "invalid_state")  # ... someone else finishes
        assert (
            not OAuthConnection.objects.exists()
            and not User.objects.filter(email="grace@example.test").exists()
        )


class TestRefusals:
    def test_state_is_single_use(self, provider):
        provider.next_identity = GRACE
        client = APIClient()
        callback = authorize(begin(client))
        assert client.get(callback).status_code == 200
        _error(client.get(callback), 400, "invalid_state")

    @pytest.mark.parametrize("state", ["made-up", ""])
    def test_unknown_or_missing_state(self, provider, state):
        callback = urlsplit(authorize(begin(APIClient())))
        query = {k: v[0] for k, v in parse_qs(callback.query).items()} | {"state": state}
        _error(APIClient().get(callback.path, query), 400, "invalid_state")

    def test_expired_state(self, provider):
        callback = authorize(begin(APIClient()))
        OAuthState.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
        _error(APIClient().get(callback), 400, "invalid_state")

    def test_pkce_verifier_mismatch_is_refused_by_the_provider(self, provider):
        callback = authorize(begin(APIClient()))
        OAuthState.objects.update(code_verifier="x" * 64)
        error = _error(APIClient().get(callback), 400, "code_exchange_failed")
        assert "invalid_grant" in error["message"] and "PKCE" in error["message"]
        assert not User.objects.filter(email="ada@example.test").exists()

    @pytest.mark.parametrize(
        ("switch", "value", "reason"),
        [
            ("audience", "another-client", "audience"),
            ("bad_signature", True, "signature"),
            ("expired", True, "expired"),
            ("nonce", "another-nonce", "nonce"),
        ],
    )
    def test_bad_id_token(self, provider, switch, value, reason):
        setattr(provider, switch, value)
        error = _error(sign_in(APIClient(), provider, GRACE), 400, "invalid_id_token")
        assert reason in error["message"]
        assert not User.objects.filter(email="grace@example.test").exists()

    def test_provider_refusal(self, provider):
        provider.deny = True
        client = APIClient()
        callback = authorize(begin(client))
        error = _error(client.get(callback), 400, "provider_error")
        assert "access_denied" in error["message"]
        assert OAuthState.objects.get().used_at is not None

    def test_unknown_provider(self, provider):
        _error(APIClient().post("/api/v1/auth/oidc/nope/start", {}), 404, "unknown_provider")
        callback = "/api/v1/auth/oidc/nope/callback?code=x&state=y"
        _error(APIClient().get(callback), 404, "unknown_provider")

    def test_provider_down(self, provider):
        provider.stop()
        _error(APIClient().post(START, {}), 502, "provider_unavailable")

    def test_provider_down_between_start_and_callback(self, provider):
        callback = authorize(begin(APIClient()))
        provider.stop()
        _error(APIClient().get(callback), 502, "provider_unavailable")

    @pytest.mark.parametrize(
        "next_path",
        ["//evil.com", "https://evil.com", "/\\evil.com", "evil.com/x", "javascript:alert(1)"],
    )
    def test_next_must_be_a_local_path(self, provider, next_path):
        response = APIClient().post(START, {"next": next_path, "client": "web"}, format="json")
        assert "next" in _error(response, 400, "invalid_next")["fields"]
        assert not OAuthState.objects.exists()


class TestConnections:
    def test_list_and_delete(self, provider, api, user):
        sign_in(api, provider, {"sub": "alice-work", "email": "a@corp.test"})
        listed = api.get(CONNECTIONS)
        assert listed.status_code == 200
        [item] = listed.json()["results"]
        assert item["provider"] == PROVIDER and item["subject"] == "alice-work"
        assert "access_token" not in item and "refresh_token" not in item
        assert api.delete(f"{CONNECTIONS}/{item['id']}").status_code == 204
        assert api.get(CONNECTIONS).json()["results"] == []

    def test_another_users_connection_is_not_found(self, provider, api):
        sign_in(APIClient(), provider, GRACE)
        grace_link = OAuthConnection.objects.get()
        _error(api.delete(f"{CONNECTIONS}/{grace_link.pk}"), 404, "not_found")
        assert OAuthConnection.objects.filter(pk=grace_link.pk).exists()

    def test_the_only_way_to_sign_in_cannot_be_removed(self, provider):
        token = sign_in(APIClient(), provider, GRACE).json()["token"]
        grace = APIClient(HTTP_AUTHORIZATION=f"Bearer {token}")
        link = OAuthConnection.objects.get()
        _error(grace.delete(f"{CONNECTIONS}/{link.pk}"), 409, "last_sign_in_method")
        assert OAuthConnection.objects.filter(pk=link.pk).exists()

    def test_needs_a_signed_in_user(self, provider):
        _error(APIClient().get(CONNECTIONS), 401, "not_authenticated")


def test_provider_tokens_never_appear_in_responses_or_logs(provider, caplog):
    caplog.set_level(logging.DEBUG)
    bodies = [sign_in(APIClient(), provider, GRACE).content]
    token = bearer_token(User.objects.get(email=GRACE["email"]))
    grace = APIClient(HTTP_AUTHORIZATION=f"Bearer {token}")
    bodies.append(grace.get(CONNECTIONS).content)
    provider.audience = "someone-else"  # and a failure
    bodies.append(sign_in(APIClient(), provider, GRACE).content)
    assert len(provider.issued_tokens) == 6
    for token in provider.issued_tokens:
        assert all(token.encode() not in body for body in bodies)
        assert token not in caplog.text
