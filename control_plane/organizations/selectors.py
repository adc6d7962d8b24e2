from __future__ import annotations

from django.core.validators import slug_re
from django.db.models import QuerySet
from django.utils import timezone

from control_plane.core.tenancy import system_database
from control_plane.organizations.models import (
    PLAN_LIMITS,
    Department,
    Invitation,
    Organization,
    OrganizationMember,
    Role,
)
from control_plane.organizations.permissions import BUILTIN_ROLES
from control_plane.users.models import User


def membership_for(*, user: User, slug: str) -> OrganizationMember | None:
    """The user's active membership in the organization `slug`, or None (unknown slug, not a
    member, suspended: the caller answers 404 for all three)."""
    return (
        OrganizationMember.objects.unscoped()
        .select_related("organization", "user")
        .filter(user=user, organization__slug=slug, status=OrganizationMember.Status.ACTIVE)
        .first()
    )


def memberships_of(*, user: User) -> QuerySet[OrganizationMember]:
    return (
        OrganizationMember.objects.unscoped()
        .select_related("organization", "user")
        .filter(user=user, status=OrganizationMember.Status.ACTIVE)
        .order_by("organization__slug")
    )


def member_list(*, role: str | None = None, department_id: str | None = None):
    qs = OrganizationMember.objects.select_related("user", "department").order_by("user__email")
    if role:  # role keys are slugs; anything else (a NUL byte, say) matches no one
        qs = qs.filter(role=role) if slug_re.match(role) else qs.none()
    if department_id and department_id.isdecimal():  # isdigit() lets "²" through to int()
        qs = qs.filter(department_id=int(department_id))
    return qs


def invitation_list(*, status: str | None = None) -> QuerySet[Invitation]:
    qs = Invitation.objects.select_related("invited_by", "department").order_by("-created_at")
    now = timezone.now()
    if status == "pending":
        qs = qs.filter(accepted_at=None, revoked_at=None, expires_at__gt=now)
    elif status == "accepted":
        qs = qs.exclude(accepted_at=None)
    elif status == "revoked":
        qs = qs.exclude(revoked_at=None)
    elif status == "expired":
        qs = qs.filter(accepted_at=None, revoked_at=None, expires_at__lte=now)
    return qs


def department_list() -> QuerySet[Department]:
    return Department.objects.order_by("name")


def role_list() -> list[dict]:
    """Built-in roles first, then the organization's custom roles."""
    builtin = [
        {
            "key": role.key,
            "name": role.name,
            "description": role.description,
            "permissions": sorted(role.permissions),
            "builtin": True,
        }
        for role in BUILTIN_ROLES.values()
    ]
    custom = [
        {
            "key": role.key,
            "name": role.name,
            "description": role.description,
            "permissions": sorted(role.permissions),
            "builtin": False,
        }
        for role in Role.objects.order_by("key")
    ]
    return builtin + custom


def role_get(*, key: str) -> dict | None:
    return next((role for role in role_list() if role["key"] == key), None)


def quota_usage(*, organization: Organization) -> dict[str, int | None]:
    """What the organization (the one in context) uses now. Features that arrive later (AI
    tokens, documents, storage, API request rates) are None until they are measured."""
    from control_plane.executions.models import WorkflowExecution

    month_start = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    executions = WorkflowExecution.objects.all()
    return {
        "runs_per_month": executions.filter(created_at__gte=month_start).count(),
        "concurrent_runs": executions.filter(status__in=["queued", "running"]).count(),
        "ai_tokens_per_month": None,
        "documents_per_month": None,
        "storage_bytes": None,
        "api_requests_per_minute": None,
    }


def concurrent_run_limits() -> dict[str, int]:
    """{organization slug: concurrent-runs limit in force} for every organization (its quota's
    value, else its plan's): a system read, one query, for Dagster's run queue."""
    rows = (
        Organization.objects.using(system_database())
        .order_by("id")
        .values_list("slug", "plan", "quota__concurrent_runs")
    )
    return {
        slug: limit if limit is not None else PLAN_LIMITS[plan]["concurrent_runs"]
        for slug, plan, limit in rows
    }
