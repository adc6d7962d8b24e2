"""UserSession: created by every login, checked on every request, revocable one by one."""

from __future__ import annotations

import re
import secrets

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from control_plane.core.errors import NotFoundError
from control_plane.users.models import User, UserSession
from control_plane.users.tokens import sha256

TOKEN_PREFIX = "fps_"
# The key in the Django session (the browser's cookie) that names the UserSession behind it.
SESSION_KEY = "_flowpilot_session_id"

_BROWSERS = [
    ("Edg/", "Edge"),
    ("Firefox/", "Firefox"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
]
_SYSTEMS = [
    ("Android", "Android"),
    ("iPhone", "iOS"),
    ("iPad", "iOS"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("Linux", "Linux"),
]


def device_from_user_agent(user_agent: str) -> str:
    """A short label for the sessions list: "Firefox on Linux", "python-httpx 0.28"."""
    browser = next((name for marker, name in _BROWSERS if marker in user_agent), "")
    system = next((name for marker, name in _SYSTEMS if marker in user_agent), "")
    if browser:
        return f"{browser} on {system}" if system else browser
    match = re.match(r"([\w.-]+)/([\w.]+)", user_agent)
    return f"{match.group(1)} {match.group(2)}"[:100] if match else "Unknown device"


def session_create(
    *, user: User, kind: str, ip: str | None, user_agent: str
) -> tuple[UserSession, str]:
    """A new session and its bearer token (returned once, stored as a hash)."""
    now = timezone.now()
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session = UserSession.objects.create(
        user=user,
        kind=kind,
        token_hash=sha256(token),
        token_prefix=token[:12],
        ip=ip,
        user_agent=user_agent[:400],
        device=device_from_user_agent(user_agent),
        created_at=now,
        last_seen_at=now,
        expires_at=now + settings.AUTH_SESSION_TTL,
    )
    User.objects.filter(pk=user.pk).update(last_login=now, last_active_at=now)
    return session, token


def _active(session: UserSession | None) -> UserSession | None:
    if session is None or not session.is_active or not session.user.is_active:
        return None
    session_touch(session)
    return session


def session_for_token(token: str) -> UserSession | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    sessions = UserSession.objects.select_related("user")
    return _active(sessions.filter(token_hash=sha256(token)).first())


def session_for_id(session_id: object) -> UserSession | None:
    if not isinstance(session_id, int):
        return None
    return _active(UserSession.objects.select_related("user").filter(pk=session_id).first())


def session_touch(session: UserSession) -> None:
    """Record activity at most once per AUTH_SESSION_TOUCH_INTERVAL: no write per request."""
    now = timezone.now()
    if now - session.last_seen_at < settings.AUTH_SESSION_TOUCH_INTERVAL:
        return
    session.last_seen_at = now
    UserSession.objects.filter(pk=session.pk).update(last_seen_at=now)
    User.objects.filter(pk=session.user_id).update(last_active_at=now)


def _open(user: User) -> QuerySet[UserSession]:
    return UserSession.objects.filter(user=user, revoked_at__isnull=True)


def session_revoke(*, user: User, session_id: int, reason: str = "revoked_by_user") -> UserSession:
    session = _open(user).filter(pk=session_id).first()
    if session is None:
        raise NotFoundError("Session not found.")
    session.revoked_at = timezone.now()
    session.revoked_reason = reason
    session.save(update_fields=["revoked_at", "revoked_reason"])
    return session


def sessions_revoke_others(
    *, user: User, keep: UserSession | None, reason: str = "revoked_by_user"
) -> int:
    """Revoke every open session of the user except `keep` (all of them when None)."""
    sessions = _open(user)
    if keep is not None:
        sessions = sessions.exclude(pk=keep.pk)
    return sessions.update(revoked_at=timezone.now(), revoked_reason=reason)
