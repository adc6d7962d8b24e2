"""Tenants and who belongs to them. `Organization` is the tenant registry itself; every other
table here is tenant-owned: scoped by `TenantManager` and guarded by row-level security."""

from __future__ import annotations

from django.conf import settings as django_settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone

from control_plane.core.tenancy import TenantManager


class Plan(models.TextChoices):
    FREE = "free"
    TEAM = "team"
    BUSINESS = "business"
    ENTERPRISE = "enterprise"


# Limits per plan; a UsageQuota field left empty takes its plan's value. None: unlimited.
PLAN_LIMITS: dict[str, dict[str, int | None]] = {
    Plan.FREE: {
        "runs_per_month": 1_000,
        "ai_tokens_per_month": 200_000,
        "documents_per_month": 100,
        "storage_bytes": 1 * 1024**3,
        "concurrent_runs": 2,
        "api_requests_per_minute": 60,
    },
    Plan.TEAM: {
        "runs_per_month": 20_000,
        "ai_tokens_per_month": 5_000_000,
        "documents_per_month": 5_000,
        "storage_bytes": 50 * 1024**3,
        "concurrent_runs": 10,
        "api_requests_per_minute": 600,
    },
    Plan.BUSINESS: {
        "runs_per_month": 200_000,
        "ai_tokens_per_month": 50_000_000,
        "documents_per_month": 50_000,
        "storage_bytes": 500 * 1024**3,
        "concurrent_runs": 50,
        "api_requests_per_minute": 3_000,
    },
    Plan.ENTERPRISE: {
        "runs_per_month": None,
        "ai_tokens_per_month": None,
        "documents_per_month": None,
        "storage_bytes": None,
        "concurrent_runs": 200,
        "api_requests_per_minute": 10_000,
    },
}
QUOTA_FIELDS = tuple(PLAN_LIMITS[Plan.FREE])


class Organization(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=60, unique=True)
    plan = models.CharField(max_length=20, choices=Plan.choices, default=Plan.FREE)
    settings = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        django_settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.slug


class Department(models.Model):
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="departments"
    )
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="uniq_department_name")
        ]

    def __str__(self) -> str:
        return self.name


class Role(models.Model):
    """A custom role: a named set of permissions in one organization. The built-in roles live in
    code (organizations.permissions.BUILTIN_ROLES); members refer to either by key."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="roles")
    key = models.SlugField(max_length=40)
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=500, blank=True)
    permissions = ArrayField(models.CharField(max_length=40), default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "key"], name="uniq_role_key")
        ]

    def __str__(self) -> str:
        return self.key


class OrganizationMember(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        SUSPENDED = "suspended"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(
        django_settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=40, default="editor")  # a built-in or custom role key
    department = models.ForeignKey(
        Department, null=True, blank=True, on_delete=models.SET_NULL, related_name="members"
    )
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "user"], name="uniq_member_per_org")
        ]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.organization_id}:{self.role}"


class Invitation(models.Model):
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="invitations"
    )
    email = models.EmailField()
    role = models.CharField(max_length=40)
    department = models.ForeignKey(
        Department, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(
        django_settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        django_settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = TenantManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "email"],
                condition=models.Q(accepted_at__isnull=True, revoked_at__isnull=True),
                name="one_open_invitation_per_email",
            )
        ]

    def __str__(self) -> str:
        return f"{self.email} → {self.organization_id}"

    @property
    def status(self) -> str:
        if self.accepted_at:
            return "accepted"
        if self.revoked_at:
            return "revoked"
        return "expired" if self.expires_at <= timezone.now() else "pending"


class UsageQuota(models.Model):
    """Limits per organization. An empty field means "the plan's value"."""

    organization = models.OneToOneField(
        Organization, on_delete=models.CASCADE, related_name="quota"
    )
    runs_per_month = models.PositiveBigIntegerField(null=True, blank=True)
    ai_tokens_per_month = models.PositiveBigIntegerField(null=True, blank=True)
    documents_per_month = models.PositiveBigIntegerField(null=True, blank=True)
    storage_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    concurrent_runs = models.PositiveIntegerField(null=True, blank=True)
    api_requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantManager()

    def __str__(self) -> str:
        return f"quota of {self.organization_id}"
