"""Single-use tokens: what the user holds is signed and timestamped (`django.core.signing`, a
salt per purpose) around a random secret; the database keeps only the secret's SHA-256, its
expiry and when it was used. A tampered, expired, used or superseded token is refused the same
way, so the response tells an attacker nothing."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.core import signing
from django.db import transaction
from django.utils import timezone

from control_plane.core.errors import ApplicationError
from control_plane.users.models import User, UserToken


class InvalidTokenError(ApplicationError):
    code = "invalid_token"


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def new_secret(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def _salt(purpose: str) -> str:
    return f"flowpilot.users.{purpose}"


def token_issue(*, user: User, purpose: str, ttl: timedelta, email: str = "") -> str:
    secret = new_secret()
    UserToken.objects.create(
        user=user,
        purpose=purpose,
        secret_hash=sha256(secret),
        email=email,
        expires_at=timezone.now() + ttl,
    )
    return signing.dumps({"s": secret}, salt=_salt(purpose), compress=False)


def token_peek(*, value: str, purpose: str, ttl: timedelta) -> UserToken:
    """The live token row for `value`, without using it up."""
    try:
        payload = signing.loads(value, salt=_salt(purpose), max_age=ttl)
        secret = str(payload["s"])
    except (signing.BadSignature, KeyError, TypeError):
        raise InvalidTokenError("This link is invalid or has expired.") from None
    token = (
        UserToken.objects.select_related("user")
        .filter(purpose=purpose, secret_hash=sha256(secret))
        .first()
    )
    if token is None or token.used_at is not None or token.expires_at <= timezone.now():
        raise InvalidTokenError("This link is invalid or has expired.")
    return token


@transaction.atomic
def token_consume(*, value: str, purpose: str, ttl: timedelta) -> UserToken:
    """Use a token once: concurrent consumers of the same token get one winner."""
    token = token_peek(value=value, purpose=purpose, ttl=ttl)
    used = UserToken.objects.filter(pk=token.pk, used_at__isnull=True).update(
        used_at=timezone.now()
    )
    if not used:
        raise InvalidTokenError("This link is invalid or has expired.")
    return token


def tokens_revoke(*, user: User, purpose: str) -> int:
    """Use up every open token of a purpose (a new password makes old reset links void)."""
    return UserToken.objects.filter(user=user, purpose=purpose, used_at__isnull=True).update(
        used_at=timezone.now()
    )


def tokens_issued_since(*, user: User, purpose: str, since) -> int:
    return UserToken.objects.filter(user=user, purpose=purpose, created_at__gte=since).count()
