from __future__ import annotations

from rest_framework import serializers

from control_plane.organizations.models import (
    QUOTA_FIELDS,
    Department,
    Invitation,
    Organization,
    OrganizationMember,
    Plan,
)
from control_plane.organizations.permissions import PERMISSIONS


class OrganizationInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=60, required=False, allow_blank=True)


class OrganizationUpdateInput(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    settings = serializers.DictField(required=False)


class OrganizationOutput(serializers.ModelSerializer):
    class Meta:
        model = Organization
        fields = ["id", "name", "slug", "plan", "settings", "created_at"]


class MyOrganizationOutput(serializers.Serializer):
    """An organization as one of mine: from my membership in it."""

    id = serializers.IntegerField(source="organization.id")
    name = serializers.CharField(source="organization.name")
    slug = serializers.CharField(source="organization.slug")
    plan = serializers.CharField(source="organization.plan")
    role = serializers.CharField()
    joined_at = serializers.DateTimeField(source="created_at")


class DepartmentRef(serializers.ModelSerializer):
    class Meta:
        model = Department
        fields = ["id", "name"]


class MemberOutput(serializers.ModelSerializer):
    email = serializers.EmailField(source="user.email")
    name = serializers.CharField(source="user.name")
    department = DepartmentRef(allow_null=True)

    class Meta:
        model = OrganizationMember
        fields = ["id", "user_id", "email", "name", "role", "department", "status", "created_at"]


class MemberUpdateInput(serializers.Serializer):
    role = serializers.SlugField(max_length=40, required=False)
    department = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    status = serializers.ChoiceField(choices=OrganizationMember.Status.choices, required=False)


class InvitationInput(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    role = serializers.SlugField(max_length=40, default="editor")
    department = serializers.IntegerField(required=False, allow_null=True, min_value=1)


class InvitationOutput(serializers.ModelSerializer):
    invited_by = serializers.EmailField(source="invited_by.email", allow_null=True, default=None)
    department = DepartmentRef(allow_null=True)

    class Meta:
        model = Invitation
        fields = [
            "id",
            "email",
            "role",
            "department",
            "status",
            "invited_by",
            "created_at",
            "expires_at",
            "accepted_at",
            "revoked_at",
        ]


class InvitationCreatedOutput(InvitationOutput):
    token = serializers.CharField(help_text="Also mailed to the address; shown only now.")

    class Meta(InvitationOutput.Meta):
        fields = [*InvitationOutput.Meta.fields, "token"]


class InvitationAcceptInput(serializers.Serializer):
    token = serializers.CharField(max_length=500)


class DepartmentInput(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(
        max_length=500, required=False, allow_blank=True, default=""
    )


class DepartmentUpdateInput(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)


class DepartmentOutput(serializers.ModelSerializer):
    class Meta:
        model = Department
        fields = ["id", "name", "description", "created_at"]


class RoleInput(serializers.Serializer):
    key = serializers.SlugField(max_length=40)
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(
        max_length=500, required=False, allow_blank=True, default=""
    )
    permissions = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(PERMISSIONS)), allow_empty=True
    )


class RoleUpdateInput(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)
    permissions = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(PERMISSIONS)), required=False
    )


class RoleOutput(serializers.Serializer):
    key = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField()
    permissions = serializers.ListField(child=serializers.CharField())
    builtin = serializers.BooleanField()


def _limit_fields(**kwargs) -> dict:
    return {field: serializers.IntegerField(allow_null=True, **kwargs) for field in QUOTA_FIELDS}


QuotaLimits = type("QuotaLimits", (serializers.Serializer,), _limit_fields())
QuotaUsage = type("QuotaUsage", (serializers.Serializer,), _limit_fields())


class QuotaOutput(serializers.Serializer):
    plan = serializers.CharField()
    limits = QuotaLimits()
    usage = QuotaUsage()


QuotaUpdateInput = type(
    "QuotaUpdateInput",
    (serializers.Serializer,),
    {
        "plan": serializers.ChoiceField(choices=Plan.choices, required=False),
        **_limit_fields(required=False, min_value=0),
    },
)


class PermissionOutput(serializers.Serializer):
    key = serializers.CharField()
    description = serializers.CharField()
