"""How a request proves who it is: a bearer token (API clients) or the session cookie (the web
UI, with CSRF). Both resolve to a live UserSession; a revoked or expired one stops working on
the next request."""

from __future__ import annotations

from django.conf import settings
from django.contrib import auth
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from control_plane.users import sessions


def client_ip(request) -> str | None:
    if settings.AUTH_TRUST_X_FORWARDED_FOR:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")[0].strip()
        if forwarded:
            return forwarded
    return request.META.get("REMOTE_ADDR") or None


def _bearer(request) -> tuple[bool, str | None]:
    """(whether the request offers a bearer token, the token when well formed)."""
    header = request.META.get("HTTP_AUTHORIZATION", "").split()
    if not header or header[0].lower() != "bearer":
        return False, None
    return True, header[1] if len(header) == 2 else None


class UserSessionMiddleware:
    """After Django's AuthenticationMiddleware, so that later middleware (the organization
    context) knows who is asking:

    - a bearer token signs the request in as its live UserSession's user;
    - a browser session is only signed in while the UserSession it names is live (the admin
      and the API share this check).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.user_session = None
        request.bearer_refused = False
        offered, token = _bearer(request)
        if offered:
            session = sessions.session_for_token(token) if token else None
            if session is None:
                request.bearer_refused = True
            else:
                request.user, request.user_session = session.user, session
        elif request.session.get(auth.SESSION_KEY) is not None:
            user_session = sessions.session_for_id(request.session.get(sessions.SESSION_KEY))
            if user_session is None or str(user_session.user_id) != str(
                request.session[auth.SESSION_KEY]
            ):
                auth.logout(request)
            else:
                request.user_session = user_session
        return self.get_response(request)


class BearerSessionAuthentication(authentication.BaseAuthentication):
    """DRF's view of what UserSessionMiddleware found for a bearer token."""

    keyword = "Bearer"

    def authenticate(self, request):
        django_request = request._request
        if getattr(django_request, "bearer_refused", False):
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked token.")
        session = getattr(django_request, "user_session", None)
        if session is None or not _bearer(django_request)[0]:
            return None
        return session.user, session

    def authenticate_header(self, request) -> str:
        return f'{self.keyword} realm="api"'


class BearerScheme(OpenApiAuthenticationExtension):
    target_class = BearerSessionAuthentication
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "The token from login."}
