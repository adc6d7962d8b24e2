"""Identity: users, their sessions, login attempts, MFA devices, outside identities and the
single-use tokens mailed to them. None of these tables is tenant-owned: a user belongs to
organizations through memberships."""

from __future__ import annotations

import zoneinfo

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from control_plane.core.crypto import EncryptedTextField


def validate_time_zone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"unknown time zone {value!r}")


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **extra) -> User:
        if not email:
            raise ValueError("email is required")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.full_clean(exclude=["password"])
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra) -> User:
        extra.update(is_staff=True, is_superuser=True, email_verified=True)
        return self.create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    email = models.EmailField(unique=True)
    name = models.CharField(max_length=150, blank=True)
    avatar_url = models.URLField(max_length=500, blank=True)
    time_zone = models.CharField(max_length=64, default="UTC", validators=[validate_time_zone])
    locale = models.CharField(max_length=16, default="en")
    email_verified = models.BooleanField(default=False)
    email_verified_at = models.DateTimeField(null=True, blank=True)
    last_active_at = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    def __str__(self) -> str:
        return self.email

    @property
    def mfa_enabled(self) -> bool:
        return self.mfa_devices.filter(confirmed_at__isnull=False).exists()


class UserSession(models.Model):
    """One login. The browser holds its id in the Django session; an API client holds a bearer
    token whose SHA-256 is `token_hash`. Revoking the row ends both on the next request."""

    class Kind(models.TextChoices):
        WEB = "web"
        API = "api"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="sessions")
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.WEB)
    token_hash = models.CharField(max_length=64, unique=True)
    token_prefix = models.CharField(max_length=12)
    user_agent = models.CharField(max_length=400, blank=True)
    device = models.CharField(max_length=100, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_reason = models.CharField(max_length=40, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["user", "-created_at"]),
            models.Index(fields=["expires_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.kind} {self.token_prefix}…"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and self.expires_at > timezone.now()


class LoginAttempt(models.Model):
    class Reason(models.TextChoices):
        OK = "ok"
        BAD_CREDENTIALS = "bad_credentials"
        INACTIVE = "inactive"
        MFA_REQUIRED = "mfa_required"
        BAD_MFA_CODE = "bad_mfa_code"
        ACCOUNT_LOCKED = "account_locked"
        IP_LOCKED = "ip_locked"
        EMAIL_NOT_VERIFIED = "email_not_verified"

    # Failures that count towards a lockout; a refused attempt while locked does not extend it.
    FAILURES = (Reason.BAD_CREDENTIALS, Reason.BAD_MFA_CODE)

    email = models.CharField(max_length=254)
    user = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=400, blank=True)
    success = models.BooleanField()
    reason = models.CharField(max_length=24, choices=Reason.choices)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["email", "-created_at"]),
            models.Index(fields=["ip", "-created_at"]),
            models.Index(fields=["created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.email} {self.reason} {self.created_at:%Y-%m-%d %H:%M}"


class MFADevice(models.Model):
    """A TOTP authenticator. Unconfirmed until the user proves it with a first code."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="mfa_devices")
    name = models.CharField(max_length=64, default="Authenticator app")
    secret = EncryptedTextField()
    created_at = models.DateTimeField(default=timezone.now)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    # The last accepted TOTP time step: a code is never accepted twice (replay).
    last_used_step = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user"],
                condition=models.Q(confirmed_at__isnull=False),
                name="one_confirmed_mfa_device_per_user",
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.name}"


class MFABackupCode(models.Model):
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="backup_codes")
    code_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "code_hash"], name="unique_backup_code")
        ]

    def __str__(self) -> str:
        return f"{self.user} backup code ({'used' if self.used_at else 'unused'})"


class OAuthConnection(models.Model):
    """A user's link to an identity at an outside OpenID Connect provider."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="oauth_connections")
    provider = models.CharField(max_length=40)
    subject = models.CharField(max_length=255)
    email = models.EmailField(blank=True)
    access_token = EncryptedTextField(blank=True)
    refresh_token = EncryptedTextField(blank=True)
    token_expires_at = models.DateTimeField(null=True, blank=True)
    scopes = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    last_login_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "subject"], name="unique_oauth_identity"),
            models.UniqueConstraint(fields=["user", "provider"], name="one_identity_per_provider"),
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.provider}"


class OAuthState(models.Model):
    """One authorization request in flight: `state` (hashed), the PKCE verifier and the nonce,
    single use and short-lived."""

    provider = models.CharField(max_length=40)
    state_hash = models.CharField(max_length=64, unique=True)
    code_verifier = EncryptedTextField()
    nonce = models.CharField(max_length=64)
    redirect_uri = models.URLField(max_length=500)
    next_path = models.CharField(max_length=500, blank=True)
    # Set when a signed-in user links an identity rather than signing in with it.
    link_user = models.ForeignKey(User, null=True, blank=True, on_delete=models.CASCADE)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.provider} sign-in started {self.created_at:%Y-%m-%d %H:%M}"


class UserToken(models.Model):
    """A single-use secret mailed to a user (email verification, password reset) or handed out
    between the two login steps (MFA challenge). The user receives a signed, timestamped value;
    only the SHA-256 of its secret is stored."""

    class Purpose(models.TextChoices):
        VERIFY_EMAIL = "verify_email"
        PASSWORD_RESET = "password_reset"
        MFA_CHALLENGE = "mfa_challenge"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="tokens")
    purpose = models.CharField(max_length=20, choices=Purpose.choices)
    secret_hash = models.CharField(max_length=64, unique=True)
    # For email verification: the address that was verified, so a later change invalidates it.
    email = models.EmailField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["user", "purpose", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.user} {self.purpose}"
