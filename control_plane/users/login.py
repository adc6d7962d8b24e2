"""Login: password, then (for MFA users) a code; every attempt recorded, lockout per account and
per IP address.

Each attempt for an address runs under a transaction-scoped advisory lock on it, so concurrent
guesses are counted one after another and a lockout cannot be raced past. The attempt row is
committed even when the login fails: the failure is raised after the transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.db import connection, transaction
from django.utils import timezone

from control_plane.core.errors import ApplicationError
from control_plane.users import mfa, tokens
from control_plane.users.models import LoginAttempt, User, UserSession, UserToken
from control_plane.users.sessions import session_create

Reason = LoginAttempt.Reason


class InvalidCredentialsError(ApplicationError):
    status_code = 401
    code = "invalid_credentials"

    def __init__(self) -> None:
        super().__init__("Email or password is not correct.")


class EmailNotVerifiedError(ApplicationError):
    status_code = 403
    code = "email_not_verified"

    def __init__(self) -> None:
        super().__init__("Verify your email address first; we can send the link again.")


class TooManyAttemptsError(ApplicationError):
    status_code = 429
    code = "too_many_attempts"

    def __init__(self, retry_after: timedelta) -> None:
        seconds = max(1, int(retry_after.total_seconds() + 0.999))
        super().__init__(
            f"Too many failed sign-in attempts. Try again in {seconds} seconds.",
            details=[{"retry_after_seconds": seconds}],
            headers={"Retry-After": str(seconds)},
        )
        self.retry_after_seconds = seconds


@dataclass(frozen=True)
class LoginResult:
    user: User
    session: UserSession | None = None
    token: str | None = None  # the bearer token of `session`
    mfa_token: str | None = None  # set instead of a session when a code is needed


@dataclass(frozen=True)
class Client:
    ip: str | None
    user_agent: str
    kind: str = UserSession.Kind.API


def normalise_email(email: str) -> str:
    return email.strip().lower()


def _lock(email: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"login:{email}"])


def _retry_after(failures: list[datetime], limit: int, now: datetime) -> timedelta | None:
    """Locked while `limit` failures fall within the window: until the oldest of them leaves."""
    if limit <= 0 or len(failures) < limit:
        return None
    remaining = failures[limit - 1] + settings.LOGIN_LOCKOUT_WINDOW - now
    return remaining if remaining > timedelta(0) else None


def lockout(
    *, email: str, ip: str | None, now: datetime | None = None
) -> tuple[str, timedelta] | None:
    """(reason, retry after) when this address or IP may not try now. A success clears the
    account's count; the IP's count only ages out."""
    now = now or timezone.now()
    since = now - settings.LOGIN_LOCKOUT_WINDOW
    recent = LoginAttempt.objects.filter(created_at__gte=since, reason__in=LoginAttempt.FAILURES)
    last_success = (
        LoginAttempt.objects.filter(email=email, success=True, created_at__gte=since)
        .order_by("-created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    account = recent.filter(email=email)
    if last_success is not None:
        account = account.filter(created_at__gt=last_success)
    limit = settings.LOGIN_MAX_FAILURES_PER_ACCOUNT
    failures = list(account.order_by("-created_at").values_list("created_at", flat=True)[:limit])
    if wait := _retry_after(failures, limit, now):
        return Reason.ACCOUNT_LOCKED, wait
    if ip:
        limit = settings.LOGIN_MAX_FAILURES_PER_IP
        by_ip = recent.filter(ip=ip).order_by("-created_at")
        failures = list(by_ip.values_list("created_at", flat=True)[:limit])
        if wait := _retry_after(failures, limit, now):
            return Reason.IP_LOCKED, wait
    return None


def record_attempt(email: str, user: User | None, client: Client, reason: str) -> None:
    LoginAttempt.objects.create(
        email=email[:254],
        user=user,
        ip=client.ip,
        user_agent=client.user_agent[:400],
        success=reason == Reason.OK,
        reason=reason,
    )


def _complete(user: User, client: Client) -> LoginResult:
    session, token = session_create(
        user=user, kind=client.kind, ip=client.ip, user_agent=client.user_agent
    )
    return LoginResult(user=user, session=session, token=token)


def after_authentication(user: User, client: Client) -> LoginResult | ApplicationError:
    """What proven credentials (a password, or an outside identity) lead to: a refusal, an MFA
    challenge or a session. The attempt is recorded either way; the caller raises a refusal
    once that record is committed."""
    if not user.is_active:
        record_attempt(user.email, user, client, Reason.INACTIVE)
        return InvalidCredentialsError()
    if settings.AUTH_REQUIRE_VERIFIED_EMAIL and not user.email_verified:
        record_attempt(user.email, user, client, Reason.EMAIL_NOT_VERIFIED)
        return EmailNotVerifiedError()
    if mfa.confirmed_device(user) is not None:
        record_attempt(user.email, user, client, Reason.MFA_REQUIRED)
        challenge = tokens.token_issue(
            user=user,
            purpose=UserToken.Purpose.MFA_CHALLENGE,
            ttl=settings.MFA_CHALLENGE_TTL,
        )
        return LoginResult(user=user, mfa_token=challenge)
    record_attempt(user.email, user, client, Reason.OK)
    return _complete(user, client)


def login_password(*, email: str, password: str, client: Client) -> LoginResult:
    """First step. Raises TooManyAttempts, InvalidCredentials or EmailNotVerified; returns a
    session, or an MFA challenge token when the user has MFA on."""
    email = normalise_email(email)
    error: ApplicationError | None = None
    with transaction.atomic():
        _lock(email)
        if locked := lockout(email=email, ip=client.ip):
            reason, wait = locked
            record_attempt(email, None, client, reason)
            error = TooManyAttemptsError(wait)
        else:
            user = User.objects.filter(email=email).first()
            if user is None:
                make_password(password)  # the same work as a real check: no timing oracle
                record_attempt(email, None, client, Reason.BAD_CREDENTIALS)
                error = InvalidCredentialsError()
            elif not user.check_password(password):
                record_attempt(email, user, client, Reason.BAD_CREDENTIALS)
                error = InvalidCredentialsError()
            else:
                outcome = after_authentication(user, client)
                if isinstance(outcome, LoginResult):
                    return outcome
                error = outcome
    raise error


def login_mfa(*, mfa_token: str, code: str, client: Client) -> LoginResult:
    """Second step: the challenge from the first step and a TOTP or backup code."""
    purpose, ttl = UserToken.Purpose.MFA_CHALLENGE, settings.MFA_CHALLENGE_TTL
    challenge = tokens.token_peek(value=mfa_token, purpose=purpose, ttl=ttl)
    user = challenge.user
    error: ApplicationError | None = None
    with transaction.atomic():
        _lock(user.email)
        if locked := lockout(email=user.email, ip=client.ip):
            reason, wait = locked
            record_attempt(user.email, user, client, reason)
            error = TooManyAttemptsError(wait)
        elif not user.is_active:
            record_attempt(user.email, user, client, Reason.INACTIVE)
            error = InvalidCredentialsError()
        else:
            try:
                with transaction.atomic():
                    mfa.second_factor_verify(user=user, code=code)
                    tokens.token_consume(value=mfa_token, purpose=purpose, ttl=ttl)
            except ApplicationError as exc:
                record_attempt(user.email, user, client, Reason.BAD_MFA_CODE)
                error = exc
            else:
                record_attempt(user.email, user, client, Reason.OK)
                return _complete(user, client)
    raise error
