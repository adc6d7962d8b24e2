from __future__ import annotations

from control_plane.organizations.models import Organization
from control_plane.users.models import User


def organizations_for_user(*, user: User):
    return Organization.objects.filter(members__user=user).order_by("slug")
