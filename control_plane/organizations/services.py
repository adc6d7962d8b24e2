"""Organization writes: create, members, invitations, departments, custom roles, quotas.

Callers act inside `tenant_context(organization.id)` (the API middleware opens it); the
services that start outside one (creating an organization, accepting an invitation) open it
themselves once they know the organization."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.core import signing
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from control_plane.core.errors import ApplicationError, ConflictError, NotFoundError
from control_plane.core.services import model_update
from control_plane.core.tenancy import tenant_context
from control_plane.organizations.models import (
    PLAN_LIMITS,
    QUOTA_FIELDS,
    Department,
    Invitation,
    Organization,
    OrganizationMember,
    Role,
    UsageQuota,
)
from control_plane.organizations.permissions import BUILTIN_ROLES, OWNER, PERMISSIONS
from control_plane.users.emails import send_template
from control_plane.users.models import User
from control_plane.users.tokens import sha256

INVITATION_SALT = "flowpilot.organizations.invitation"


class ForbiddenError(ApplicationError):
    status_code = 403
    code = "permission_denied"


def _fields_error(field: str, message: str, code: str = "invalid") -> ApplicationError:
    return ApplicationError(message, code=code, fields={field: [message]})


# -- organizations -------------------------------------------------------------------------------


@transaction.atomic
def organization_create(
    *, name: str, owner: User, slug: str | None = None, plan: str = "free"
) -> Organization:
    """A new organization with its creator as owner and a quota row with the plan's limits."""
    slug = slug or slugify(name)[:60]
    if not slug:
        raise _fields_error("slug", "Choose a slug: letters, digits and hyphens.")
    if Organization.objects.filter(slug=slug).exists():
        raise ConflictError(f"The slug '{slug}' is taken.", fields={"slug": ["already taken"]})
    organization = Organization(name=name, slug=slug, plan=plan, created_by=owner)
    organization.full_clean()
    try:
        with transaction.atomic():
            organization.save()
    except IntegrityError:  # a concurrent create took the slug
        raise ConflictError(
            f"The slug '{slug}' is taken.", fields={"slug": ["already taken"]}
        ) from None
    with tenant_context(organization.pk, user_id=owner.pk):
        OrganizationMember.objects.create(organization=organization, user=owner, role=OWNER)
        UsageQuota.objects.create(organization=organization)
    return organization


@transaction.atomic
def organization_update(*, organization: Organization, **changes) -> Organization:
    return model_update(organization, changes, fields=("name", "settings"))


# -- roles and permissions -----------------------------------------------------------------------


def role_permissions(*, role: str) -> frozenset[str]:
    """The permissions of a built-in role, or of a custom role of the organization in context."""
    if role in BUILTIN_ROLES:
        return BUILTIN_ROLES[role].permissions
    custom = Role.objects.filter(key=role).values_list("permissions", flat=True).first()
    return frozenset(custom or ())


def _check_role(role: str, field: str = "role") -> None:
    if role not in BUILTIN_ROLES and not Role.objects.filter(key=role).exists():
        raise _fields_error(field, f"Unknown role '{role}'.")


def _check_permissions(permissions: list[str]) -> list[str]:
    unknown = sorted(set(permissions) - set(PERMISSIONS))
    if unknown:
        raise _fields_error("permissions", f"Unknown permissions: {', '.join(unknown)}.")
    return sorted(set(permissions))


@transaction.atomic
def role_create(
    *, organization: Organization, key: str, name: str, permissions: list[str], description: str
) -> Role:
    if key in BUILTIN_ROLES:
        raise ConflictError(f"'{key}' is a built-in role.", fields={"key": ["built-in role"]})
    if Role.objects.filter(key=key).exists():
        raise ConflictError(f"The role '{key}' exists.", fields={"key": ["already exists"]})
    role = Role(
        organization=organization,
        key=key,
        name=name,
        description=description,
        permissions=_check_permissions(permissions),
    )
    role.full_clean()
    role.save()
    return role


def _custom_role(key: str) -> Role:
    if key in BUILTIN_ROLES:
        raise ConflictError("Built-in roles cannot be changed or deleted.")
    role = Role.objects.filter(key=key).first()
    if role is None:
        raise NotFoundError("Role not found.")
    return role


@transaction.atomic
def role_update(*, key: str, **changes) -> Role:
    role = _custom_role(key)
    if "permissions" in changes:
        changes["permissions"] = _check_permissions(changes["permissions"])
    return model_update(role, changes, fields=("name", "description", "permissions"))


@transaction.atomic
def role_delete(*, key: str) -> None:
    role = _custom_role(key)
    in_use = OrganizationMember.objects.filter(role=key).count()
    in_use += Invitation.objects.filter(role=key, accepted_at=None, revoked_at=None).count()
    if in_use:
        raise ConflictError(f"The role '{key}' is in use ({in_use} members or invitations).")
    role.delete()


# -- members -------------------------------------------------------------------------------------


def _owners(exclude: OrganizationMember | None = None) -> int:
    owners = OrganizationMember.objects.select_for_update().filter(
        role=OWNER, status=OrganizationMember.Status.ACTIVE
    )
    if exclude is not None:
        owners = owners.exclude(pk=exclude.pk)
    return len(owners)  # evaluated: the rows are locked against a concurrent demotion


def _member(member_id: int) -> OrganizationMember:
    member = OrganizationMember.objects.select_related("user").filter(pk=member_id).first()
    if member is None:
        raise NotFoundError("Member not found.")
    return member


def _department(department_id: int | None) -> Department | None:
    if department_id is None:
        return None
    department = Department.objects.filter(pk=department_id).first()
    if department is None:
        raise _fields_error("department", "Unknown department.")
    return department


def _owner_rule(actor: OrganizationMember, *roles: str) -> None:
    if OWNER in roles and actor.role != OWNER:
        raise ForbiddenError("Only an owner can make or unmake owners.")


@transaction.atomic
def member_update(
    *,
    actor: OrganizationMember,
    member_id: int,
    role: str | None = None,
    department_id: int | None | type[...] = ...,
    status: str | None = None,
) -> OrganizationMember:
    member = _member(member_id)
    if role is not None and role != member.role:
        _check_role(role)
        _owner_rule(actor, role, member.role)
        if member.role == OWNER and not _owners(exclude=member):
            raise ConflictError("The last owner cannot be demoted; make someone else owner first.")
        member.role = role
    if status is not None and status != member.status:
        _owner_rule(actor, member.role)
        if member.role == OWNER and status != "active" and not _owners(exclude=member):
            raise ConflictError("The last owner cannot be suspended.")
        member.status = status
    if department_id is not ...:
        member.department = _department(department_id)
    member.full_clean()
    member.save()
    return member


@transaction.atomic
def member_remove(*, actor: OrganizationMember, member_id: int) -> None:
    member = _member(member_id)
    if member.pk != actor.pk:
        _owner_rule(actor, member.role)
    if member.role == OWNER and not _owners(exclude=member):
        raise ConflictError("The last owner cannot be removed; make someone else owner first.")
    member.delete()


# -- invitations ---------------------------------------------------------------------------------


@transaction.atomic
def invitation_create(
    *,
    actor: OrganizationMember,
    email: str,
    role: str,
    department_id: int | None = None,
) -> tuple[Invitation, str]:
    """Invite an address; returns the invitation and its token (also mailed)."""
    organization = actor.organization
    email = email.strip().lower()
    _check_role(role)
    _owner_rule(actor, role)
    if OrganizationMember.objects.filter(user__email=email).exists():
        raise ConflictError(f"{email} is already a member.", fields={"email": ["already a member"]})
    open_invitation = Invitation.objects.filter(
        email=email, accepted_at=None, revoked_at=None
    ).first()
    if open_invitation is not None:
        if open_invitation.expires_at > timezone.now():
            raise ConflictError(
                f"{email} has an open invitation; revoke it to send a new one.",
                fields={"email": ["already invited"]},
            )
        open_invitation.revoked_at = timezone.now()  # expired: make room for the new one
        open_invitation.save(update_fields=["revoked_at"])
    secret = secrets.token_urlsafe(32)
    invitation = Invitation(
        organization=organization,
        email=email,
        role=role,
        department=_department(department_id),
        token_hash=sha256(secret),
        invited_by=actor.user,
        expires_at=timezone.now() + settings.INVITATION_TTL,
    )
    invitation.full_clean(exclude=["token_hash"])
    invitation.save()
    token = signing.dumps({"o": organization.pk, "s": secret}, salt=INVITATION_SALT)
    send_template(
        email,
        "organizations/email/invitation.txt",
        {
            "inviter": actor.user.name or actor.user.email,
            "organization": organization.name,
            "role": role,
            "token": token,
            "days": settings.INVITATION_TTL.days,
        },
    )
    return invitation, token


@transaction.atomic
def invitation_revoke(*, invitation_id: int) -> Invitation:
    invitation = Invitation.objects.filter(pk=invitation_id).first()
    if invitation is None:
        raise NotFoundError("Invitation not found.")
    if invitation.status != "pending":
        raise ConflictError(f"The invitation is {invitation.status}.")
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at"])
    return invitation


def _invalid_invitation() -> ApplicationError:
    return ApplicationError("This invitation is invalid or has expired.", code="invalid_token")


def invitation_accept(*, token: str, user: User) -> OrganizationMember:
    """Join the organization an invitation is for. The invitation must be pending and for the
    signed-in user's (verified) email address."""
    try:
        payload = signing.loads(token, salt=INVITATION_SALT, max_age=settings.INVITATION_TTL)
        organization_id, secret = int(payload["o"]), str(payload["s"])
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        raise _invalid_invitation() from None
    with tenant_context(organization_id, user_id=user.pk):
        invitation = (
            Invitation.objects.select_for_update().filter(token_hash=sha256(secret)).first()
        )
        if invitation is None or invitation.status != "pending":
            raise _invalid_invitation()
        if invitation.email != user.email.lower():
            raise ForbiddenError(
                "This invitation is for another email address. Sign in with that address.",
                code="invitation_wrong_email",
            )
        if not user.email_verified:
            raise ForbiddenError("Verify your email address first.", code="email_not_verified")
        if OrganizationMember.objects.filter(user=user).exists():
            raise ConflictError("You are already a member of this organization.")
        member = OrganizationMember.objects.create(
            organization_id=organization_id,
            user=user,
            role=invitation.role,
            department=invitation.department,
        )
        invitation.accepted_at = timezone.now()
        invitation.accepted_by = user
        invitation.save(update_fields=["accepted_at", "accepted_by"])
        return member


# -- departments ---------------------------------------------------------------------------------


@transaction.atomic
def department_create(*, organization: Organization, name: str, description: str) -> Department:
    if Department.objects.filter(name=name).exists():
        raise ConflictError(f"The department '{name}' exists.", fields={"name": ["exists"]})
    department = Department(organization=organization, name=name, description=description)
    department.full_clean()
    department.save()
    return department


@transaction.atomic
def department_update(*, department_id: int, **changes) -> Department:
    department = Department.objects.filter(pk=department_id).first()
    if department is None:
        raise NotFoundError("Department not found.")
    if (
        "name" in changes
        and Department.objects.filter(name=changes["name"]).exclude(pk=department_id).exists()
    ):
        raise ConflictError(f"The department '{changes['name']}' exists.")
    return model_update(department, changes, fields=("name", "description"))


@transaction.atomic
def department_delete(*, department_id: int) -> None:
    deleted, _ = Department.objects.filter(pk=department_id).delete()
    if not deleted:
        raise NotFoundError("Department not found.")


# -- quotas --------------------------------------------------------------------------------------


def quota_limits(*, organization: Organization) -> dict[str, int | None]:
    """The limits in force: each quota field, or the plan's value when it is empty."""
    quota = UsageQuota.objects.filter(organization=organization).first()
    plan = PLAN_LIMITS[organization.plan]
    return {
        field: (
            getattr(quota, field) if quota and getattr(quota, field) is not None else plan[field]
        )
        for field in QUOTA_FIELDS
    }


@transaction.atomic
def quota_update(*, organization: Organization, plan: str | None = None, **limits) -> None:
    """Change the plan and/or override limits (None: back to the plan's value). Staff only."""
    if plan is not None:
        organization.plan = plan
        organization.full_clean()
        organization.save(update_fields=["plan"])
    quota, _ = UsageQuota.objects.get_or_create(organization=organization)
    for field, value in limits.items():
        if field not in QUOTA_FIELDS:
            raise ValueError(f"not a quota field: {field}")
        setattr(quota, field, value)
    quota.full_clean()  # the database's integer ranges: a 400, not a DataError
    quota.save()
