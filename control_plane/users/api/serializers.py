from __future__ import annotations

from rest_framework import serializers

from control_plane.users.models import LoginAttempt, OAuthConnection, User, UserSession


class RegisterInput(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    password = serializers.CharField(max_length=256, trim_whitespace=False)
    name = serializers.CharField(max_length=150, required=False, allow_blank=True, default="")


class LoginInput(serializers.Serializer):
    email = serializers.CharField(max_length=254)
    password = serializers.CharField(max_length=256, trim_whitespace=False)
    client = serializers.ChoiceField(
        choices=["api", "web"],
        default="api",
        help_text="api: the response carries a bearer token. web: a session cookie is set.",
    )


class LoginMfaInput(serializers.Serializer):
    mfa_token = serializers.CharField(max_length=500)
    code = serializers.CharField(max_length=32)
    client = serializers.ChoiceField(choices=["api", "web"], default="api")


class TokenInput(serializers.Serializer):
    token = serializers.CharField(max_length=500)


class EmailInput(serializers.Serializer):
    email = serializers.EmailField(max_length=254)


class PasswordResetConfirmInput(serializers.Serializer):
    token = serializers.CharField(max_length=500)
    password = serializers.CharField(max_length=256, trim_whitespace=False)


class PasswordChangeInput(serializers.Serializer):
    current_password = serializers.CharField(max_length=256, trim_whitespace=False)
    new_password = serializers.CharField(max_length=256, trim_whitespace=False)


class CodeInput(serializers.Serializer):
    code = serializers.CharField(max_length=32)


class PasswordCodeInput(serializers.Serializer):
    password = serializers.CharField(max_length=256, trim_whitespace=False)
    code = serializers.CharField(max_length=32)


class UserOutput(serializers.ModelSerializer):
    mfa_enabled = serializers.BooleanField(read_only=True)

    class Meta:
        model = User
        fields = [
            "id",
            "email",
            "name",
            "avatar_url",
            "time_zone",
            "locale",
            "email_verified",
            "mfa_enabled",
            "date_joined",
            "last_login",
            "last_active_at",
        ]


class UserUpdateInput(serializers.Serializer):
    name = serializers.CharField(max_length=150, required=False, allow_blank=True)
    avatar_url = serializers.URLField(max_length=500, required=False, allow_blank=True)
    time_zone = serializers.CharField(max_length=64, required=False)
    locale = serializers.RegexField(r"^[a-zA-Z]{2,3}([-_][a-zA-Z0-9]{2,8})?$", required=False)


class SessionOutput(serializers.ModelSerializer):
    current = serializers.SerializerMethodField()
    active = serializers.BooleanField(source="is_active")

    class Meta:
        model = UserSession
        fields = [
            "id",
            "kind",
            "device",
            "user_agent",
            "ip",
            "created_at",
            "last_seen_at",
            "expires_at",
            "revoked_at",
            "revoked_reason",
            "active",
            "current",
        ]

    def get_current(self, session: UserSession) -> bool:
        current = self.context.get("current")
        return current is not None and current.pk == session.pk


class LoginOutput(serializers.Serializer):
    """Either `mfa_required` with an `mfa_token` for the second step, or a signed-in user (and a
    bearer `token` for API clients)."""

    mfa_required = serializers.BooleanField()
    mfa_token = serializers.CharField(required=False)
    token = serializers.CharField(required=False)
    expires_at = serializers.DateTimeField(required=False)
    user = UserOutput(required=False)


class LoginAttemptOutput(serializers.ModelSerializer):
    class Meta:
        model = LoginAttempt
        fields = ["id", "ip", "user_agent", "success", "reason", "created_at"]


class ConnectionOutput(serializers.ModelSerializer):
    class Meta:
        model = OAuthConnection
        fields = ["id", "provider", "subject", "email", "scopes", "created_at", "last_login_at"]


class MfaStatusOutput(serializers.Serializer):
    enabled = serializers.BooleanField()
    confirmed_at = serializers.DateTimeField(allow_null=True)
    backup_codes_remaining = serializers.IntegerField()


class EnrolmentOutput(serializers.Serializer):
    secret = serializers.CharField()
    provisioning_uri = serializers.CharField()
    qr_svg = serializers.CharField(help_text="An <svg> element of the provisioning URI.")


class BackupCodesOutput(serializers.Serializer):
    backup_codes = serializers.ListField(child=serializers.CharField())


class DetailOutput(serializers.Serializer):
    detail = serializers.CharField()
