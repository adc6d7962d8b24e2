"""Sign in with OpenID Connect: the authorization code flow with state, nonce and PKCE (S256)
against a provider named in `settings.OIDC_PROVIDERS`.

The state row is used up before the code is exchanged, so a callback counts once whatever
happens next. The ID token arrives straight from the token endpoint, yet it is still verified
(signature against the provider's published keys, issuer, audience, expiry, nonce): it is what
names the person. The provider's tokens are stored encrypted and never logged or returned.

An identity signs in to the account it is linked to. An unlinked identity is linked to the
account with its email address only when both the provider and FlowPilot have verified that
address; otherwise the owner signs in with the password and links from the settings."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote_plus, urlencode

import httpx
import jwt
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme

from control_plane.core.errors import ApplicationError, ConflictError, NotFoundError
from control_plane.users import login, tokens
from control_plane.users.login import Client, LoginResult
from control_plane.users.models import OAuthConnection, OAuthState, User

log = logging.getLogger(__name__)

CACHE_TTL_SECONDS = 3600.0  # discovery documents and key sets
CLOCK_SKEW_SECONDS = 60  # leeway on the ID token's exp and iat
DEFAULT_SCOPES = "openid email profile"
_ERROR_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class ProviderUnavailableError(ApplicationError):
    status_code = 502
    code = "provider_unavailable"


class InvalidStateError(ApplicationError):
    code = "invalid_state"

    def __init__(
        self, message: str = "This sign-in request is unknown, used or expired. Start again."
    ) -> None:
        super().__init__(message)


class InvalidIdTokenError(ApplicationError):
    code = "invalid_id_token"

    def __init__(self, reason: str) -> None:
        super().__init__(f"The ID token from the provider is not valid: {reason}.")


@dataclass(frozen=True)
class Authorization:
    url: str  # where to send the browser
    state: str  # the raw state in `url`; only its hash is stored


@dataclass(frozen=True)
class CallbackResult:
    connection: OAuthConnection
    next_path: str
    login: LoginResult | None = None  # a sign-in (session or MFA challenge); None when linking


# -- provider configuration, discovery and keys ------------------------------------------------


def provider_config(name: str) -> dict[str, str]:
    config = settings.OIDC_PROVIDERS.get(name)
    if not config:
        raise NotFoundError(f"Unknown provider {name[:40]!r}.", code="unknown_provider")
    return {"scopes": DEFAULT_SCOPES, **config, "issuer": config["issuer"].rstrip("/")}


_cache: dict[str, tuple[float, dict[str, Any]]] = {}
_cache_lock = threading.Lock()


def discovery_cache_clear() -> None:
    """Forget every cached discovery document and key set (tests; a changed configuration)."""
    with _cache_lock:
        _cache.clear()


def _fetch_json(url: str, what: str) -> dict[str, Any]:
    try:
        response = httpx.get(
            url, timeout=settings.OIDC_TIMEOUT_SECONDS, headers={"Accept": "application/json"}
        )
        response.raise_for_status()
        body = response.json()
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
        log.warning("oidc: fetching the %s failed: %s", what, type(exc).__name__)
        raise ProviderUnavailableError(
            f"The sign-in provider is not reachable (its {what}). Try again later."
        ) from None
    if not isinstance(body, dict):
        raise ProviderUnavailableError(f"The sign-in provider's {what} is not a JSON object.")
    return body


def _cached(url: str, what: str, *, refresh: bool = False) -> tuple[dict[str, Any], bool]:
    """(document, fetched just now) from the in-process cache, fetching it when missing, older
    than CACHE_TTL_SECONDS or when `refresh` is asked."""
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(url)
    if hit is not None and not refresh and now - hit[0] < CACHE_TTL_SECONDS:
        return hit[1], False
    document = _fetch_json(url, what)
    with _cache_lock:
        _cache[url] = (now, document)
    return document, True


def discovery(name: str) -> dict[str, Any]:
    """The provider's OpenID configuration (cached per issuer)."""
    issuer = provider_config(name)["issuer"]
    url = f"{issuer}/.well-known/openid-configuration"
    document, _ = _cached(url, "discovery document")
    required = ("authorization_endpoint", "token_endpoint", "jwks_uri")
    if str(document.get("issuer", "")).rstrip("/") != issuer or not all(
        isinstance(document.get(key), str) for key in required
    ):
        with _cache_lock:
            _cache.pop(url, None)
        raise ProviderUnavailableError(
            "The sign-in provider's discovery document does not match its configuration."
        )
    return document


def _find_key(key_set: dict[str, Any], kid: str | None) -> dict[str, Any] | None:
    keys = [
        key
        for key in key_set.get("keys") or []
        if isinstance(key, dict) and key.get("kty") == "RSA" and key.get("use", "sig") == "sig"
    ]
    if kid is None:
        return keys[0] if len(keys) == 1 else None
    return next((key for key in keys if key.get("kid") == kid), None)


def _signing_key(document: dict[str, Any], kid: str | None) -> jwt.PyJWK:
    """The provider's public key `kid`; an unknown kid refetches the key set once (rotation)."""
    key_set, fresh = _cached(document["jwks_uri"], "signing keys")
    key = _find_key(key_set, kid)
    if key is None and not fresh:
        key_set, _ = _cached(document["jwks_uri"], "signing keys", refresh=True)
        key = _find_key(key_set, kid)
    if key is None:
        raise InvalidIdTokenError("it is signed with a key the provider does not publish")
    try:
        return jwt.PyJWK(key, algorithm="RS256")
    except jwt.PyJWTError:
        raise InvalidIdTokenError("the provider publishes an unusable signing key") from None


# -- start ---------------------------------------------------------------------------------------


def _check_next(next_path: str) -> None:
    """Only a path on our own site: no scheme, no host, no "//" or "/\\" (open redirects)."""
    if next_path and not (
        next_path.startswith("/")
        and not next_path.startswith("//")
        and url_has_allowed_host_and_scheme(next_path, allowed_hosts=None)
    ):
        message = "Must be a path on this site, starting with a single '/'."
        raise ApplicationError(message, code="invalid_next", fields={"next": [message]})


def _pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def oidc_start(
    *, provider: str, redirect_uri: str, next_path: str = "", link_user: User | None = None
) -> Authorization:
    """Begin a sign-in (or, with `link_user`, linking an identity to that signed-in user): store
    the state, nonce and PKCE verifier and return the provider's authorization URL."""
    config = provider_config(provider)
    _check_next(next_path)
    document = discovery(provider)
    state, nonce, verifier = tokens.new_secret(), tokens.new_secret(), tokens.new_secret(48)
    OAuthState.objects.create(
        provider=provider,
        state_hash=tokens.sha256(state),
        code_verifier=verifier,
        nonce=nonce,
        redirect_uri=redirect_uri,
        next_path=next_path,
        link_user=link_user,
        expires_at=timezone.now() + settings.OIDC_STATE_TTL,
    )
    query = urlencode(
        {
            "response_type": "code",
            "client_id": config["client_id"],
            "redirect_uri": redirect_uri,
            "scope": config["scopes"],
            "state": state,
            "nonce": nonce,
            "code_challenge": _pkce_challenge(verifier),
            "code_challenge_method": "S256",
        }
    )
    endpoint = document["authorization_endpoint"]
    return Authorization(url=f"{endpoint}{'&' if '?' in endpoint else '?'}{query}", state=state)


# -- callback ------------------------------------------------------------------------------------


def _state_consume(*, provider: str, state: str) -> OAuthState:
    """The live state row, marked used in the same statement: concurrent callbacks get one
    winner, and it stays used whatever fails later."""
    if not state:
        raise InvalidStateError()
    now = timezone.now()
    state_hash = tokens.sha256(state)
    used = OAuthState.objects.filter(
        provider=provider, state_hash=state_hash, used_at__isnull=True, expires_at__gt=now
    ).update(used_at=now)
    if not used:
        raise InvalidStateError()
    return OAuthState.objects.select_related("link_user").get(state_hash=state_hash)


def _exchange(
    *, config: dict[str, str], document: dict[str, Any], code: str, pending: OAuthState
) -> dict[str, Any]:
    """Trade the code for tokens at the token endpoint, with the PKCE verifier."""
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": pending.redirect_uri,
        "code_verifier": pending.code_verifier,
    }
    auth = None
    methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    if "client_secret_basic" in methods:  # RFC 6749 §2.3.1: form-encoded, then Basic
        auth = (quote_plus(config["client_id"]), quote_plus(config["client_secret"]))
    else:
        data |= {"client_id": config["client_id"], "client_secret": config["client_secret"]}
    try:
        response = httpx.post(
            document["token_endpoint"],
            data=data,
            auth=auth,
            timeout=settings.OIDC_TIMEOUT_SECONDS,
            headers={"Accept": "application/json"},
        )
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        log.warning("oidc: the token request failed: %s", type(exc).__name__)
        raise ProviderUnavailableError(
            "The sign-in provider is not reachable. Try again later."
        ) from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 500 or not isinstance(body, dict):
        log.warning("oidc: the token endpoint answered %s", response.status_code)
        raise ProviderUnavailableError("The sign-in provider failed to answer. Try again later.")
    if response.status_code != 200 or "error" in body:
        error = _error_name(body.get("error"))
        description = str(body.get("error_description") or "")[:200]
        log.info("oidc: the provider refused the code: %s", error)
        raise ApplicationError(
            f"The provider refused the sign-in code ({error}"
            f"{': ' + description if description else ''}). Start again.",
            code="code_exchange_failed",
        )
    if not isinstance(body.get("id_token"), str) or not isinstance(body.get("access_token"), str):
        raise InvalidIdTokenError("the provider's answer carries no ID token or access token")
    return body


def _verify_id_token(
    id_token: str, *, config: dict[str, str], document: dict[str, Any], nonce: str
) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(id_token)
    except jwt.PyJWTError:
        raise InvalidIdTokenError("it is not a well-formed JWT") from None
    if header.get("alg") != "RS256":
        raise InvalidIdTokenError(f"it is signed with {str(header.get('alg'))[:16]!r}, not RS256")
    key = _signing_key(document, header.get("kid"))
    try:
        claims = jwt.decode(
            id_token,
            key,
            algorithms=["RS256"],
            audience=config["client_id"],
            issuer=document["issuer"],
            leeway=CLOCK_SKEW_SECONDS,
            options={"require": ["iss", "sub", "aud", "exp", "iat"]},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidIdTokenError("it has expired") from None
    except jwt.InvalidAudienceError:
        raise InvalidIdTokenError("it was issued for another client (audience)") from None
    except jwt.InvalidIssuerError:
        raise InvalidIdTokenError("it was issued by another issuer") from None
    except jwt.InvalidSignatureError:
        raise InvalidIdTokenError("its signature does not verify") from None
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidIdTokenError(f"the {exc.claim!r} claim is missing") from None
    except jwt.PyJWTError as exc:
        raise InvalidIdTokenError(f"it is not acceptable ({type(exc).__name__})") from None
    if not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
        raise InvalidIdTokenError("its nonce does not belong to this sign-in request")
    if "azp" in claims and claims["azp"] != config["client_id"]:
        raise InvalidIdTokenError("it was issued for another client (azp)")
    if not isinstance(claims["sub"], str) or not 0 < len(claims["sub"]) <= 255:
        raise InvalidIdTokenError("its subject is not a string of 1 to 255 characters")
    return claims


def _error_name(value: object) -> str:
    value = str(value or "")
    return value if _ERROR_NAME.fullmatch(value) else "unknown_error"


def _claimed_email(claims: dict[str, Any]) -> str:
    email = claims.get("email")
    return login.normalise_email(email) if isinstance(email, str) and len(email) <= 254 else ""


def _email_verified(claims: dict[str, Any]) -> bool:
    return claims.get("email_verified") in (True, "true")


def _store_tokens(
    connection: OAuthConnection, *, grant: dict[str, Any], claims: dict[str, Any], scopes: str
) -> OAuthConnection:
    now = timezone.now()
    connection.access_token = grant["access_token"]
    if isinstance(grant.get("refresh_token"), str):
        connection.refresh_token = grant["refresh_token"]
    try:
        connection.token_expires_at = now + timedelta(seconds=int(grant["expires_in"]))
    except (KeyError, TypeError, ValueError, OverflowError):
        connection.token_expires_at = None
    connection.scopes = str(grant.get("scope") or scopes)[:500]
    connection.email = _claimed_email(claims) or connection.email
    connection.last_login_at = now
    connection.save()
    return connection


def _new_connection(*, user: User, provider: str, subject: str) -> OAuthConnection:
    if OAuthConnection.objects.filter(user=user, provider=provider).exists():
        raise ConflictError(
            "This account is already linked to another identity at this provider; remove that "
            "link first.",
            code="provider_already_linked",
        )
    return OAuthConnection(user=user, provider=provider, subject=subject)


def _link(*, user: User, provider: str, subject: str) -> OAuthConnection:
    existing = OAuthConnection.objects.filter(provider=provider, subject=subject).first()
    if existing is None:
        return _new_connection(user=user, provider=provider, subject=subject)
    if existing.user_id != user.pk:
        raise ConflictError(
            "This identity is already linked to another FlowPilot account.",
            code="identity_in_use",
        )
    return existing


def _user_create(*, email: str, claims: dict[str, Any]) -> User:
    verified = _email_verified(claims)
    name = claims.get("name") if isinstance(claims.get("name"), str) else ""
    try:
        return User.objects.create_user(  # no password: an unusable one
            email,
            None,
            name=name.strip()[:150],
            email_verified=verified,
            email_verified_at=timezone.now() if verified else None,
        )
    except ValidationError:
        raise ApplicationError(
            "The provider's email address cannot be used for an account.", code="invalid_email"
        ) from None


def _sign_in_connection(*, provider: str, claims: dict[str, Any]) -> OAuthConnection:
    """The connection this identity signs in with: its own, or a new one to the account with
    its (doubly verified) email address, or to a new account."""
    existing = (
        OAuthConnection.objects.select_related("user")
        .filter(provider=provider, subject=claims["sub"])
        .first()
    )
    if existing is not None:
        return existing
    email = _claimed_email(claims)
    if not email:
        raise ApplicationError(
            "The provider did not share an email address, so no account can be found or made.",
            code="email_required",
        )
    user = User.objects.filter(email=email).first()
    if user is None and not _email_verified(claims):
        # An account made from an unverified address could be claimed later by the
        # address's real owner (password reset) while this identity keeps signing in to it.
        raise ApplicationError(
            "The provider has not verified this email address. Verify it there, or sign up "
            "with a password.",
            code="email_not_verified",
            status_code=403,
        )
    if user is None:
        user = _user_create(email=email, claims=claims)
    elif not (_email_verified(claims) and user.email_verified):
        raise ConflictError(
            "An account with this email address already exists. Sign in with your password, "
            "then link this provider from your account settings.",
            code="email_in_use",
        )
    return _new_connection(user=user, provider=provider, subject=claims["sub"])


def oidc_callback(
    *,
    provider: str,
    code: str,
    state: str,
    client: Client,
    error: str = "",
    user: User | None = None,
) -> CallbackResult:
    """Finish what `oidc_start` began: sign in (or link, for a link request) with the identity
    the provider vouches for. `user` is whoever is signed in on this request; a link request is
    finished only by the user who started it."""
    config = provider_config(provider)
    if error:
        if state:  # the request is over either way
            OAuthState.objects.filter(provider=provider, state_hash=tokens.sha256(state)).update(
                used_at=timezone.now()
            )
        name = _error_name(error)
        raise ApplicationError(
            f"The provider did not sign you in ({name}).",
            code="provider_error",
            details=[{"provider_error": name}],
        )
    pending = _state_consume(provider=provider, state=state)
    link_user = pending.link_user
    if link_user is not None and (user is None or user.pk != link_user.pk):
        raise InvalidStateError("This link request belongs to another signed-in user. Start again.")
    if not code:
        raise ApplicationError("The provider sent no authorization code.", code="invalid_request")
    document = discovery(provider)
    grant = _exchange(config=config, document=document, code=code, pending=pending)
    claims = _verify_id_token(
        grant["id_token"], config=config, document=document, nonce=pending.nonce
    )
    store = {"grant": grant, "claims": claims, "scopes": config["scopes"]}
    try:
        with transaction.atomic():
            if link_user is not None:
                connection = _link(user=link_user, provider=provider, subject=claims["sub"])
                return CallbackResult(_store_tokens(connection, **store), pending.next_path)
            connection = _sign_in_connection(provider=provider, claims=claims)
            connection = _store_tokens(connection, **store)
            outcome = login.after_authentication(connection.user, client)
    except IntegrityError:  # a concurrent callback for the same identity or address won
        raise ConflictError(
            "Another sign-in with this identity happened at the same time."
        ) from None
    if isinstance(outcome, ApplicationError):
        raise outcome
    return CallbackResult(connection, pending.next_path, outcome)


# -- connections ---------------------------------------------------------------------------------


@transaction.atomic
def connection_delete(*, user: User, connection_id: int) -> None:
    """Unlink an identity, unless it is the only way left to sign in to the account."""
    account = User.objects.select_for_update().get(pk=user.pk)  # one unlink at a time
    connection = OAuthConnection.objects.filter(user=account, pk=connection_id).first()
    if connection is None:
        raise NotFoundError("Connection not found.")
    others = OAuthConnection.objects.filter(user=account).exclude(pk=connection.pk)
    if not account.has_usable_password() and not others.exists():
        raise ConflictError(
            "This is your only way to sign in. Set a password first (use “Forgot password”).",
            code="last_sign_in_method",
        )
    connection.delete()
