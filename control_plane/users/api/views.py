"""Auth and user APIs: thin views over login, sessions, mfa and services."""

from __future__ import annotations

from django.contrib import auth
from django.middleware.csrf import get_token
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from control_plane.core.pagination import paginated_response
from control_plane.users import login, mfa, selectors, services, sessions
from control_plane.users.api import serializers as s
from control_plane.users.authentication import client_ip
from control_plane.users.models import UserSession

SENT = {
    "detail": "If the address can receive mail from us, a message is on its way. Check your inbox."
}


def valid_data(serializer_class, request):
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def request_client(request, kind: str = UserSession.Kind.API) -> login.Client:
    return login.Client(
        ip=client_ip(request), user_agent=request.META.get("HTTP_USER_AGENT", ""), kind=kind
    )


def current_session(request) -> UserSession | None:
    return getattr(request, "user_session", None)


def login_response(request, result: login.LoginResult, kind: str) -> Response:
    """The answer to a login step: an MFA challenge, a session cookie (web) or a bearer token."""
    if result.mfa_token is not None:
        return Response({"mfa_required": True, "mfa_token": result.mfa_token})
    body = {
        "mfa_required": False,
        "expires_at": result.session.expires_at,
        "user": s.UserOutput(result.user).data,
    }
    if kind == UserSession.Kind.WEB:
        django_request = request._request
        auth.login(django_request, result.user, backend="django.contrib.auth.backends.ModelBackend")
        django_request.session[sessions.SESSION_KEY] = result.session.pk
        get_token(django_request)  # the web UI needs the CSRF cookie for its next requests
    else:
        body["token"] = result.token
    return Response(s.LoginOutput(body).data)


class PublicApi(APIView):
    """Endpoints for people not signed in: a stale Authorization header must not get in the way."""

    authentication_classes: list = []
    permission_classes = [AllowAny]


class RegisterApi(PublicApi):
    @extend_schema(request=s.RegisterInput, responses={202: s.DetailOutput})
    def post(self, request):
        data = valid_data(s.RegisterInput, request)
        services.user_register(email=data["email"], password=data["password"], name=data["name"])
        return Response(SENT, status=status.HTTP_202_ACCEPTED)


class LoginApi(PublicApi):
    @extend_schema(request=s.LoginInput, responses=s.LoginOutput)
    def post(self, request):
        data = valid_data(s.LoginInput, request)
        result = login.login_password(
            email=data["email"],
            password=data["password"],
            client=request_client(request, data["client"]),
        )
        return login_response(request, result, data["client"])


class LoginMfaApi(PublicApi):
    @extend_schema(request=s.LoginMfaInput, responses=s.LoginOutput)
    def post(self, request):
        data = valid_data(s.LoginMfaInput, request)
        result = login.login_mfa(
            mfa_token=data["mfa_token"],
            code=data["code"],
            client=request_client(request, data["client"]),
        )
        return login_response(request, result, data["client"])


class LogoutApi(APIView):
    @extend_schema(request=None, responses={204: None})
    def post(self, request):
        session = current_session(request)
        if session is not None:
            sessions.session_revoke(user=request.user, session_id=session.pk, reason="logout")
        auth.logout(request._request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class EmailVerifyApi(PublicApi):
    @extend_schema(request=s.TokenInput, responses=s.UserOutput)
    def post(self, request):
        user = services.email_verify(token=valid_data(s.TokenInput, request)["token"])
        return Response({"detail": "Your email address is verified.", "email": user.email})


class EmailVerifyResendApi(PublicApi):
    @extend_schema(request=s.EmailInput, responses={202: s.DetailOutput})
    def post(self, request):
        services.email_verification_resend(email=valid_data(s.EmailInput, request)["email"])
        return Response(SENT, status=status.HTTP_202_ACCEPTED)


class PasswordResetApi(PublicApi):
    @extend_schema(request=s.EmailInput, responses={202: s.DetailOutput})
    def post(self, request):
        services.password_reset_request(email=valid_data(s.EmailInput, request)["email"])
        return Response(SENT, status=status.HTTP_202_ACCEPTED)


class PasswordResetConfirmApi(PublicApi):
    @extend_schema(request=s.PasswordResetConfirmInput, responses=s.DetailOutput)
    def post(self, request):
        data = valid_data(s.PasswordResetConfirmInput, request)
        services.password_reset_confirm(token=data["token"], new_password=data["password"])
        return Response({"detail": "Your password is changed; sign in with it."})


class MeApi(APIView):
    @extend_schema(responses=s.UserOutput)
    def get(self, request):
        return Response(s.UserOutput(request.user).data)

    @extend_schema(request=s.UserUpdateInput, responses=s.UserOutput)
    def patch(self, request):
        user = services.user_update(user=request.user, **valid_data(s.UserUpdateInput, request))
        return Response(s.UserOutput(user).data)


class PasswordChangeApi(APIView):
    @extend_schema(request=s.PasswordChangeInput, responses=s.DetailOutput)
    def post(self, request):
        data = valid_data(s.PasswordChangeInput, request)
        keep = current_session(request)
        revoked = services.password_change(
            user=request.user,
            current_password=data["current_password"],
            new_password=data["new_password"],
            keep=keep,
        )
        if keep is not None and keep.kind == UserSession.Kind.WEB:
            auth.update_session_auth_hash(request._request, request.user)
        return Response({"detail": f"Password changed; {revoked} other sessions signed out."})


class SessionListApi(APIView):
    @extend_schema(responses=s.SessionOutput(many=True))
    def get(self, request):
        qs = selectors.session_list(user=request.user, active=request.query_params.get("active"))
        context = {"current": current_session(request)}
        return paginated_response(qs, request, self, s.SessionOutput, context)


class SessionDetailApi(APIView):
    @extend_schema(request=None, responses={204: None})
    def delete(self, request, session_id: int):
        sessions.session_revoke(user=request.user, session_id=session_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SessionRevokeOthersApi(APIView):
    @extend_schema(request=None, responses=s.DetailOutput)
    def post(self, request):
        revoked = sessions.sessions_revoke_others(user=request.user, keep=current_session(request))
        return Response({"detail": f"{revoked} other sessions signed out.", "revoked": revoked})


class LoginAttemptListApi(APIView):
    """Recent sign-in activity on my account."""

    @extend_schema(responses=s.LoginAttemptOutput(many=True))
    def get(self, request):
        attempts = selectors.login_attempt_list(user=request.user)
        return paginated_response(attempts, request, self, s.LoginAttemptOutput)


class MfaStatusApi(APIView):
    @extend_schema(responses=s.MfaStatusOutput)
    def get(self, request):
        device = mfa.confirmed_device(request.user)
        return Response(
            {
                "enabled": device is not None,
                "confirmed_at": device.confirmed_at if device else None,
                "backup_codes_remaining": mfa.backup_codes_remaining(request.user),
            }
        )


class MfaEnrolApi(APIView):
    @extend_schema(request=None, responses={201: s.EnrolmentOutput})
    def post(self, request):
        enrolment = mfa.totp_enrol(user=request.user)
        body = {
            "secret": enrolment.secret,
            "provisioning_uri": enrolment.provisioning_uri,
            "qr_svg": enrolment.qr_svg,
        }
        return Response(body, status=status.HTTP_201_CREATED)


class MfaConfirmApi(APIView):
    @extend_schema(request=s.CodeInput, responses=s.BackupCodesOutput)
    def post(self, request):
        codes = mfa.totp_confirm(user=request.user, code=valid_data(s.CodeInput, request)["code"])
        return Response({"backup_codes": codes})


class MfaBackupCodesApi(APIView):
    @extend_schema(request=s.PasswordCodeInput, responses=s.BackupCodesOutput)
    def post(self, request):
        data = valid_data(s.PasswordCodeInput, request)
        codes = mfa.backup_codes_regenerate(
            user=request.user, password=data["password"], code=data["code"]
        )
        return Response({"backup_codes": codes})


class MfaDisableApi(APIView):
    @extend_schema(request=s.PasswordCodeInput, responses={204: None})
    def post(self, request):
        data = valid_data(s.PasswordCodeInput, request)
        mfa.mfa_disable(user=request.user, password=data["password"], code=data["code"])
        return Response(status=status.HTTP_204_NO_CONTENT)
