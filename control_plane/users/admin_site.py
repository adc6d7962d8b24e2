"""The admin signs in through the same path as the API: attempts recorded, lockout, the second
factor, and a UserSession that can be revoked."""

from __future__ import annotations

from functools import update_wrapper

from django import forms
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm

from control_plane.core.errors import ApplicationError
from control_plane.core.tenancy import system_context
from control_plane.users import login, sessions
from control_plane.users.authentication import client_ip
from control_plane.users.models import UserSession


class AdminLoginForm(AdminAuthenticationForm):
    code = forms.CharField(
        label="Authentication code",
        required=False,
        help_text="From your authenticator app, or a backup code, when two-factor is on.",
    )

    def clean(self):
        email, password = self.cleaned_data.get("username"), self.cleaned_data.get("password")
        if not email or not password:
            return self.cleaned_data
        client = login.Client(
            ip=client_ip(self.request),
            user_agent=self.request.META.get("HTTP_USER_AGENT", ""),
            kind=UserSession.Kind.WEB,
        )
        try:
            result = login.login_password(email=email, password=password, client=client)
            if result.mfa_token is not None:
                code = self.cleaned_data.get("code") or ""
                if not code:
                    raise forms.ValidationError("Enter the code from your authenticator app.")
                result = login.login_mfa(mfa_token=result.mfa_token, code=code, client=client)
        except ApplicationError as exc:
            raise forms.ValidationError(exc.message) from None
        if not result.user.is_staff:
            sessions.session_revoke(user=result.user, session_id=result.session.pk)
            raise forms.ValidationError(
                self.error_messages["invalid_login"], params={"username": "email"}
            )
        self.user_cache = result.user
        self.request.flowpilot_pending_session = result.session
        return self.cleaned_data


class FlowPilotAdminSite(admin.AdminSite):
    """Staff work across organizations: every admin view is a system task."""

    site_header = "FlowPilot administration"
    site_title = "FlowPilot admin"
    login_form = AdminLoginForm

    def admin_view(self, view, cacheable=False):
        inner = super().admin_view(view, cacheable)

        def in_system_context(request, *args, **kwargs):
            with system_context():
                response = inner(request, *args, **kwargs)
                if callable(getattr(response, "render", None)):
                    response.render()  # templates query too: render inside the context
                return response

        return update_wrapper(in_system_context, inner)

    def login(self, request, extra_context=None):
        response = super().login(request, extra_context)
        pending = getattr(request, "flowpilot_pending_session", None)
        if pending is not None and request.user.is_authenticated:
            request.session[sessions.SESSION_KEY] = pending.pk
        return response
