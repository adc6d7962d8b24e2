from django.urls import path

from control_plane.users.api import oidc as oidc_views
from control_plane.users.api import views

auth_urls = [
    path("auth/register", views.RegisterApi.as_view(), name="auth-register"),
    path("auth/login", views.LoginApi.as_view(), name="auth-login"),
    path("auth/login/mfa", views.LoginMfaApi.as_view(), name="auth-login-mfa"),
    path("auth/logout", views.LogoutApi.as_view(), name="auth-logout"),
    path("auth/email/verify", views.EmailVerifyApi.as_view(), name="auth-email-verify"),
    path(
        "auth/email/verify/resend",
        views.EmailVerifyResendApi.as_view(),
        name="auth-email-verify-resend",
    ),
    path("auth/password/reset", views.PasswordResetApi.as_view(), name="auth-password-reset"),
    path(
        "auth/password/reset/confirm",
        views.PasswordResetConfirmApi.as_view(),
        name="auth-password-reset-confirm",
    ),
    path(
        "auth/oidc/<str:provider>/start",
        oidc_views.OidcStartApi.as_view(),
        name="auth-oidc-start",
    ),
    path(
        "auth/oidc/<str:provider>/callback",
        oidc_views.OidcCallbackApi.as_view(),
        name="auth-oidc-callback",
    ),
]

me_urls = [
    path("users/me", views.MeApi.as_view(), name="me"),
    path("users/me/password", views.PasswordChangeApi.as_view(), name="me-password"),
    path("users/me/sessions", views.SessionListApi.as_view(), name="me-sessions"),
    path(
        "users/me/sessions/revoke-others",
        views.SessionRevokeOthersApi.as_view(),
        name="me-sessions-revoke-others",
    ),
    path(
        "users/me/sessions/<int:session_id>",
        views.SessionDetailApi.as_view(),
        name="me-session-detail",
    ),
    path("users/me/login-attempts", views.LoginAttemptListApi.as_view(), name="me-login-attempts"),
    path("users/me/mfa", views.MfaStatusApi.as_view(), name="me-mfa"),
    path("users/me/mfa/totp", views.MfaEnrolApi.as_view(), name="me-mfa-totp"),
    path("users/me/mfa/totp/confirm", views.MfaConfirmApi.as_view(), name="me-mfa-totp-confirm"),
    path("users/me/mfa/backup-codes", views.MfaBackupCodesApi.as_view(), name="me-mfa-backup"),
    path("users/me/mfa/disable", views.MfaDisableApi.as_view(), name="me-mfa-disable"),
    path("users/me/connections", oidc_views.ConnectionListApi.as_view(), name="me-connections"),
    path(
        "users/me/connections/<int:connection_id>",
        oidc_views.ConnectionDetailApi.as_view(),
        name="me-connection-detail",
    ),
]

urlpatterns = auth_urls + me_urls
