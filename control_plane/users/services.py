"""Account writes: sign-up, profile, email verification, password change and reset, clean-up.

Nothing here tells a caller whether an address has an account: sign-up, "send the link again"
and "reset my password" behave the same either way, and the owner of an existing address gets
an email instead."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.contrib.auth.password_validation import validate_password
from django.contrib.sessions.models import Session
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from control_plane.core.errors import ApplicationError
from control_plane.core.services import model_update
from control_plane.users import emails, tokens
from control_plane.users.login import normalise_email
from control_plane.users.models import (
    LoginAttempt,
    MFADevice,
    OAuthState,
    User,
    UserSession,
    UserToken,
)
from control_plane.users.sessions import sessions_revoke_others

Purpose = UserToken.Purpose


def _validate_password(password: str, user: User, field: str = "password") -> None:
    try:
        validate_password(password, user)
    except ValidationError as exc:
        raise ApplicationError(
            exc.messages[0], code="weak_password", fields={field: exc.messages}
        ) from None


def _may_send(user: User, purpose: str) -> bool:
    since = timezone.now() - timedelta(hours=1)
    sent = tokens.tokens_issued_since(user=user, purpose=purpose, since=since)
    return sent < settings.AUTH_MAX_EMAILS_PER_HOUR


def _send_verification(user: User) -> None:
    if not _may_send(user, Purpose.VERIFY_EMAIL):
        return
    token = tokens.token_issue(
        user=user,
        purpose=Purpose.VERIFY_EMAIL,
        ttl=settings.EMAIL_VERIFICATION_TTL,
        email=user.email,
    )
    emails.send_verification(user.email, token)


@transaction.atomic
def user_register(*, email: str, password: str, name: str = "") -> User | None:
    """Create an unverified account and mail a verification link; for an address that already
    has an account, mail its owner instead. Returns the new user, or None; the API answers the
    same in both cases."""
    email = normalise_email(email)
    _validate_password(password, User(email=email, name=name))
    existing = User.objects.filter(email=email).first()
    if existing is not None:
        make_password(password)  # the same work as the sign-up path
        emails.send_account_exists(existing.email)
        return None
    user = User.objects.create_user(email, password, name=name)
    _send_verification(user)
    return user


def email_verification_resend(*, email: str) -> None:
    user = User.objects.filter(email=normalise_email(email), is_active=True).first()
    if user is not None and not user.email_verified:
        _send_verification(user)


@transaction.atomic
def email_verify(*, token: str) -> User:
    used = tokens.token_consume(
        value=token, purpose=Purpose.VERIFY_EMAIL, ttl=settings.EMAIL_VERIFICATION_TTL
    )
    user = User.objects.select_for_update().get(pk=used.user_id)
    if used.email != user.email:
        raise tokens.InvalidTokenError("This link is invalid or has expired.")
    if not user.email_verified:
        user.email_verified = True
        user.email_verified_at = timezone.now()
        user.save(update_fields=["email_verified", "email_verified_at"])
    return user


PROFILE_FIELDS = ("name", "avatar_url", "time_zone", "locale")


@transaction.atomic
def user_update(*, user: User, **changes) -> User:
    return model_update(user, changes, fields=PROFILE_FIELDS, exclude=["password"])


@transaction.atomic
def password_change(
    *, user: User, current_password: str, new_password: str, keep: UserSession | None
) -> int:
    """Change the password and sign out every other session; returns how many were revoked."""
    if not user.check_password(current_password):
        message = "The current password is not correct."
        raise ApplicationError(
            message, code="invalid_password", fields={"current_password": [message]}
        )
    _validate_password(new_password, user, field="new_password")
    user.set_password(new_password)
    user.save(update_fields=["password"])
    tokens.tokens_revoke(user=user, purpose=Purpose.PASSWORD_RESET)
    revoked = sessions_revoke_others(user=user, keep=keep, reason="password_changed")
    emails.send_password_changed(user.email)
    return revoked


def password_reset_request(*, email: str) -> None:
    user = User.objects.filter(email=normalise_email(email), is_active=True).first()
    if user is None or not _may_send(user, Purpose.PASSWORD_RESET):
        return
    token = tokens.token_issue(
        user=user, purpose=Purpose.PASSWORD_RESET, ttl=settings.PASSWORD_RESET_TTL
    )
    emails.send_password_reset(user.email, token)


@transaction.atomic
def password_reset_confirm(*, token: str, new_password: str) -> User:
    """Set a new password from a reset link: the link is used up, every other reset link and
    every session of the user is revoked, and the address counts as verified (the link proved
    it)."""
    ttl = settings.PASSWORD_RESET_TTL
    peeked = tokens.token_peek(value=token, purpose=Purpose.PASSWORD_RESET, ttl=ttl)
    _validate_password(new_password, peeked.user)  # a weak choice must not burn the link
    used = tokens.token_consume(value=token, purpose=Purpose.PASSWORD_RESET, ttl=ttl)
    user = User.objects.select_for_update().get(pk=used.user_id)
    user.set_password(new_password)
    if not user.email_verified:
        user.email_verified, user.email_verified_at = True, timezone.now()
    user.save(update_fields=["password", "email_verified", "email_verified_at"])
    tokens.tokens_revoke(user=user, purpose=Purpose.PASSWORD_RESET)
    sessions_revoke_others(user=user, keep=None, reason="password_reset")
    emails.send_password_changed(user.email)
    return user


SESSION_RETENTION = timedelta(days=30)  # revoked/expired sessions stay visible this long
UNCONFIRMED_MFA_TTL = timedelta(days=1)


@transaction.atomic
def identity_cleanup(*, now: datetime | None = None) -> dict[str, int]:
    """Delete what has no use any more; returns the number of rows per kind. Run by the
    `identity_cleanup` Dagster schedule."""
    now = now or timezone.now()
    old = now - SESSION_RETENTION
    sessions = UserSession.objects.filter(Q(expires_at__lt=old) | Q(revoked_at__lt=old))
    user_tokens = UserToken.objects.filter(Q(expires_at__lt=now) | Q(used_at__isnull=False))
    attempts = LoginAttempt.objects.filter(created_at__lt=now - settings.LOGIN_ATTEMPT_RETENTION)
    states = OAuthState.objects.filter(Q(expires_at__lt=now) | Q(used_at__isnull=False))
    devices = MFADevice.objects.filter(
        confirmed_at__isnull=True, created_at__lt=now - UNCONFIRMED_MFA_TTL
    )
    return {
        "sessions": sessions.delete()[0],
        "tokens": user_tokens.delete()[0],
        "login_attempts": attempts.delete()[0],
        "oauth_states": states.delete()[0],
        "mfa_devices": devices.delete()[0],
        "django_sessions": Session.objects.filter(expire_date__lt=now).delete()[0],
    }
