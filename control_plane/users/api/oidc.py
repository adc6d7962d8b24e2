"""Sign in with OpenID Connect: thin views over control_plane.users.oidc.

Start is open to anyone; when the request is signed in it starts linking an identity to that
user instead. A web client's state is also remembered in its browser session, and only a
callback from that browser signs in with a cookie: a callback URL handed to someone else (login
CSRF) cannot sign them in to the account that started it."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponseRedirect
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from control_plane.core.pagination import paginated_response
from control_plane.users import oidc, selectors, tokens
from control_plane.users.api import serializers as s
from control_plane.users.api.views import login_response, request_client, valid_data
from control_plane.users.models import User, UserSession

# Hashes of the states this browser started as a web client (the newest few).
PENDING_STATES_KEY = "_flowpilot_oidc_states"
MAX_PENDING_STATES = 5


class OidcStartInput(serializers.Serializer):
    next = serializers.CharField(
        max_length=500,
        required=False,
        allow_blank=True,
        default="",
        help_text="A path on this site to land on afterwards (web client), e.g. /workflows.",
    )
    client = serializers.ChoiceField(
        choices=["api", "web"],
        default="api",
        help_text="api: the callback answers with a bearer token. web: it sets a session "
        "cookie and redirects to `next`.",
    )


class AuthorizationOutput(serializers.Serializer):
    authorization_url = serializers.URLField()


class OidcCallbackInput(serializers.Serializer):
    code = serializers.CharField(max_length=2000, required=False, default="")
    state = serializers.CharField(max_length=200, required=False, default="")
    error = serializers.CharField(max_length=200, required=False, default="")


def _signed_in(request) -> User | None:
    user = request.user
    return user if user is not None and user.is_authenticated else None


def _remember_state(request, state: str) -> None:
    pending = request.session.get(PENDING_STATES_KEY, [])[-(MAX_PENDING_STATES - 1) :]
    request.session[PENDING_STATES_KEY] = [*pending, tokens.sha256(state)]


def _forget_state(request, state: str) -> bool:
    """Whether this browser started `state` as a web client (and forget it)."""
    pending = request.session.get(PENDING_STATES_KEY, [])
    state_hash = tokens.sha256(state)
    if not state or state_hash not in pending:
        return False
    request.session[PENDING_STATES_KEY] = [h for h in pending if h != state_hash]
    return True


def _web_landing(next_path: str) -> HttpResponseRedirect:
    return HttpResponseRedirect(f"{settings.FLOWPILOT_WEB_URL}{next_path or '/'}")


class OidcStartApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(request=OidcStartInput, responses=AuthorizationOutput)
    def post(self, request, provider: str):
        data = valid_data(OidcStartInput, request)
        redirect_uri = request.build_absolute_uri(reverse("auth-oidc-callback", args=[provider]))
        authorization = oidc.oidc_start(
            provider=provider,
            redirect_uri=redirect_uri,
            next_path=data["next"],
            link_user=_signed_in(request),
        )
        if data["client"] == UserSession.Kind.WEB:
            _remember_state(request, authorization.state)
        return Response({"authorization_url": authorization.url})


class OidcCallbackApi(APIView):
    """Where the provider sends the browser back. Signs in (a token, or for the web client a
    cookie and a redirect), answers an MFA challenge, or links the identity."""

    permission_classes = [AllowAny]

    @extend_schema(
        parameters=[OidcCallbackInput],
        responses={200: s.LoginOutput, 302: None},
        description="Sign-in: LoginOutput. Link request: ConnectionOutput. Web client: 302.",
    )
    def get(self, request, provider: str):
        query = OidcCallbackInput(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        web = _forget_state(request, data["state"])
        kind = UserSession.Kind.WEB if web else UserSession.Kind.API
        result = oidc.oidc_callback(
            provider=provider,
            code=data["code"],
            state=data["state"],
            error=data["error"],
            client=request_client(request, kind),
            user=_signed_in(request),
        )
        if result.login is None:
            if web:
                return _web_landing(result.next_path)
            return Response(s.ConnectionOutput(result.connection).data)
        response = login_response(request, result.login, kind)
        if web and result.login.mfa_token is None:
            return _web_landing(result.next_path)  # login_response has set the cookie
        return response


class ConnectionListApi(APIView):
    @extend_schema(responses=s.ConnectionOutput(many=True))
    def get(self, request):
        connections = selectors.connection_list(user=request.user)
        return paginated_response(connections, request, self, s.ConnectionOutput)


class ConnectionDetailApi(APIView):
    @extend_schema(request=None, responses={204: None})
    def delete(self, request, connection_id: int):
        oidc.connection_delete(user=request.user, connection_id=connection_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
