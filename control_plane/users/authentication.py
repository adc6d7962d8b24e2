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


class BearerSessionAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <token>'.")
        try:
            token = header[1].decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        session = sessions.session_for_token(token)
        if session is None:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked token.")
        request._request.user_session = session
        return session.user, session

    def authenticate_header(self, request) -> str:
        return f'{self.keyword} realm="api"'


class UserSessionMiddleware:
    """After Django's AuthenticationMiddleware: a browser session is only signed in while the
    UserSession it names is live. Admin and API share this check."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.user_session = None
        if request.session.get(auth.SESSION_KEY) is not None:
            user_session = sessions.session_for_id(request.session.get(sessions.SESSION_KEY))
            if user_session is None or str(user_session.user_id) != str(
                request.session[auth.SESSION_KEY]
            ):
                auth.logout(request)
            else:
                request.user_session = user_session
        return self.get_response(request)


class BearerScheme(OpenApiAuthenticationExtension):
    target_class = BearerSessionAuthentication
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "The token from login."}
