"""Admin panels for identity. Secrets (password hashes, TOTP secrets, OAuth tokens, token
hashes) are never shown; what staff can do is revoke, disable and unlock."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db import models
from django.utils import timezone

from control_plane.users import sessions
from control_plane.users.models import (
    LoginAttempt,
    MFABackupCode,
    MFADevice,
    OAuthConnection,
    User,
    UserSession,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records written by the system: staff read and act on them, never edit them."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class SessionInline(admin.TabularInline):
    model = UserSession
    fields = ("kind", "device", "ip", "created_at", "last_seen_at", "expires_at", "revoked_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("-created_at",)
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class MFADeviceInline(admin.TabularInline):
    model = MFADevice
    fields = ("name", "created_at", "confirmed_at", "last_used_at")
    readonly_fields = fields
    extra = 0

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class OAuthConnectionInline(admin.TabularInline):
    model = OAuthConnection
    fields = ("provider", "subject", "email", "created_at", "last_login_at")
    readonly_fields = fields
    extra = 0

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(User)
class UserAdmin(admin.ModelAdmin):
    list_display = (
        "email",
        "name",
        "email_verified",
        "mfa",
        "is_active",
        "is_staff",
        "last_active_at",
        "date_joined",
    )
    list_filter = ("is_active", "is_staff", "email_verified")
    search_fields = ("email", "name")
    ordering = ("-date_joined",)
    readonly_fields = ("last_login", "last_active_at", "date_joined", "email_verified_at")
    fieldsets = (
        (None, {"fields": ("email", "name", "avatar_url", "time_zone", "locale")}),
        ("Status", {"fields": ("is_active", "email_verified", "email_verified_at")}),
        ("Permissions", {"fields": ("is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Activity", {"fields": ("last_login", "last_active_at", "date_joined")}),
    )
    inlines = (SessionInline, MFADeviceInline, OAuthConnectionInline)
    formfield_overrides = {
        models.URLField: {"form_class": forms.URLField, "assume_scheme": "https"}
    }
    actions = ("revoke_all_sessions", "disable_mfa", "unlock")

    @admin.display(boolean=True, description="MFA")
    def mfa(self, user: User) -> bool:
        return user.mfa_enabled

    @admin.action(description="Sign out everywhere (revoke all sessions)")
    def revoke_all_sessions(self, request, queryset):
        count = sum(
            sessions.sessions_revoke_others(user=user, keep=None, reason="revoked_by_admin")
            for user in queryset
        )
        self.message_user(request, f"{count} sessions revoked.", messages.SUCCESS)

    @admin.action(description="Turn off two-factor authentication (lost device)")
    def disable_mfa(self, request, queryset):
        MFABackupCode.objects.filter(user__in=queryset).delete()
        count, _ = MFADevice.objects.filter(user__in=queryset).delete()
        self.message_user(request, f"{count} devices removed.", messages.SUCCESS)

    @admin.action(description="Unlock sign-in (forget recent failed attempts)")
    def unlock(self, request, queryset):
        emails = list(queryset.values_list("email", flat=True))
        count, _ = LoginAttempt.objects.filter(
            email__in=emails, reason__in=LoginAttempt.FAILURES
        ).delete()
        self.message_user(request, f"{count} failed attempts forgotten.", messages.SUCCESS)


@admin.register(UserSession)
class UserSessionAdmin(ReadOnlyAdmin):
    list_display = ("user", "kind", "device", "ip", "created_at", "last_seen_at", "status")
    list_filter = ("kind", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("user__email", "ip", "device", "token_prefix")
    exclude = ("token_hash",)
    list_select_related = ("user",)
    ordering = ("-created_at",)
    actions = ("revoke",)

    @admin.display(description="status")
    def status(self, session: UserSession) -> str:
        if session.revoked_at:
            return f"revoked ({session.revoked_reason})"
        return "active" if session.expires_at > timezone.now() else "expired"

    @admin.action(description="Revoke selected sessions")
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(
            revoked_at=timezone.now(), revoked_reason="revoked_by_admin"
        )
        self.message_user(request, f"{count} sessions revoked.", messages.SUCCESS)


@admin.register(LoginAttempt)
class LoginAttemptAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "email", "ip", "success", "reason", "user_agent")
    list_filter = ("success", "reason")
    search_fields = ("email", "ip")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)


@admin.register(MFADevice)
class MFADeviceAdmin(ReadOnlyAdmin):
    list_display = ("user", "name", "created_at", "confirmed_at", "last_used_at")
    list_filter = (("confirmed_at", admin.EmptyFieldListFilter),)
    search_fields = ("user__email",)
    exclude = ("secret", "last_used_step")
    list_select_related = ("user",)


@admin.register(OAuthConnection)
class OAuthConnectionAdmin(ReadOnlyAdmin):
    list_display = ("user", "provider", "subject", "email", "created_at", "last_login_at")
    list_filter = ("provider",)
    search_fields = ("user__email", "email", "subject")
    exclude = ("access_token", "refresh_token")
    list_select_related = ("user",)
