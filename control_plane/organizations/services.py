from __future__ import annotations

from django.db import transaction
from django.utils.text import slugify

from control_plane.core.errors import ConflictError
from control_plane.organizations.models import Organization, OrganizationMember
from control_plane.users.models import User


@transaction.atomic
def organization_create(*, name: str, owner: User, slug: str | None = None) -> Organization:
    slug = slug or slugify(name)
    if Organization.objects.filter(slug=slug).exists():
        raise ConflictError(f"organization '{slug}' exists", fields={"slug": ["already taken"]})
    organization = Organization(name=name, slug=slug)
    organization.full_clean()
    organization.save()
    OrganizationMember.objects.create(
        organization=organization, user=owner, role=OrganizationMember.Role.OWNER
    )
    return organization
