from __future__ import annotations

from django.db.models import QuerySet
from django.utils import timezone

from control_plane.users.models import LoginAttempt, User, UserSession


def session_list(*, user: User, active: str | None = None) -> QuerySet[UserSession]:
    """The user's sessions, newest first; `active=true` leaves out revoked and expired ones."""
    qs = UserSession.objects.filter(user=user).order_by("-created_at", "-pk")
    if active in {"true", "1"}:
        qs = qs.filter(revoked_at__isnull=True, expires_at__gt=timezone.now())
    return qs


def login_attempt_list(*, user: User) -> QuerySet[LoginAttempt]:
    return LoginAttempt.objects.filter(email=user.email).order_by("-created_at", "-pk")


def connection_list(*, user: User) -> QuerySet:
    """The user's links to outside identity providers (OAuthConnection)."""
    return user.oauth_connections.order_by("provider", "pk")
