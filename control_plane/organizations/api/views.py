"""Organization APIs: thin views over services and selectors."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from control_plane.core.pagination import paginated_response
from control_plane.organizations import selectors, services
from control_plane.organizations.api import serializers as s
from control_plane.organizations.api.base import TenantApi
from control_plane.organizations.permissions import PERMISSIONS
from control_plane.users.api.views import valid_data


class OrganizationListApi(APIView):
    """My organizations, and creating one (its creator becomes the owner)."""

    @extend_schema(responses=s.MyOrganizationOutput(many=True))
    def get(self, request):
        memberships = selectors.memberships_of(user=request.user)
        return paginated_response(memberships, request, self, s.MyOrganizationOutput)

    @extend_schema(request=s.OrganizationInput, responses={201: s.OrganizationOutput})
    def post(self, request):
        data = valid_data(s.OrganizationInput, request)
        organization = services.organization_create(
            name=data["name"], slug=data.get("slug") or None, owner=request.user
        )
        return Response(s.OrganizationOutput(organization).data, status=status.HTTP_201_CREATED)


class InvitationAcceptApi(APIView):
    """Accept an invitation with the token from its mail, as the invited address's user."""

    @extend_schema(request=s.InvitationAcceptInput, responses={201: s.MyOrganizationOutput})
    def post(self, request):
        token = valid_data(s.InvitationAcceptInput, request)["token"]
        member = services.invitation_accept(token=token, user=request.user)
        return Response(s.MyOrganizationOutput(member).data, status=status.HTTP_201_CREATED)


class PermissionListApi(APIView):
    """The permission names roles are made of."""

    @extend_schema(responses=s.PermissionOutput(many=True))
    def get(self, request):
        return Response([{"key": k, "description": d} for k, d in PERMISSIONS.items()])


class OrganizationDetailApi(TenantApi):
    required_permissions = {"GET": "member.read", "PATCH": "organization.manage"}

    @extend_schema(responses=s.OrganizationOutput)
    def get(self, request):
        return Response(s.OrganizationOutput(self.organization).data)

    @extend_schema(request=s.OrganizationUpdateInput, responses=s.OrganizationOutput)
    def patch(self, request):
        data = valid_data(s.OrganizationUpdateInput, request)
        organization = services.organization_update(organization=self.organization, **data)
        return Response(s.OrganizationOutput(organization).data)


class MemberListApi(TenantApi):
    required_permissions = {"GET": "member.read"}

    @extend_schema(responses=s.MemberOutput(many=True))
    def get(self, request):
        members = selectors.member_list(
            role=request.query_params.get("role"),
            department_id=request.query_params.get("department"),
        )
        return paginated_response(members, request, self, s.MemberOutput)


class MemberDetailApi(TenantApi):
    """Members leave on their own (DELETE of their own membership needs no permission)."""

    required_permissions = {"GET": "member.read", "PATCH": "member.manage", "DELETE": "member.read"}

    def permissions(self) -> frozenset[str]:
        permissions = super().permissions()
        if self.request.method == "DELETE" and self.kwargs.get("member_id") == self.membership.pk:
            return permissions | {self.required_permissions["DELETE"]}  # leaving: anyone may
        return permissions

    def _member(self, member_id: int):
        member = selectors.member_list().filter(pk=member_id).first()
        if member is None:
            raise NotFound("Member not found.")
        return member

    @extend_schema(responses=s.MemberOutput)
    def get(self, request, member_id: int):
        return Response(s.MemberOutput(self._member(member_id)).data)

    @extend_schema(request=s.MemberUpdateInput, responses=s.MemberOutput)
    def patch(self, request, member_id: int):
        data = valid_data(s.MemberUpdateInput, request)
        if "department" in data:
            data["department_id"] = data.pop("department")
        services.member_update(actor=self.membership, member_id=member_id, **data)
        return Response(s.MemberOutput(self._member(member_id)).data)

    @extend_schema(responses={204: None})
    def delete(self, request, member_id: int):
        if member_id != self.membership.pk and "member.manage" not in self.permissions():
            self._member(member_id)  # 404 before 403 for ids of other organizations
            raise PermissionDenied("Your role does not allow removing other members.")
        services.member_remove(actor=self.membership, member_id=member_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class InvitationListApi(TenantApi):
    required_permissions = {"GET": "invitation.manage", "POST": "invitation.manage"}

    @extend_schema(responses=s.InvitationOutput(many=True))
    def get(self, request):
        invitations = selectors.invitation_list(status=request.query_params.get("status"))
        return paginated_response(invitations, request, self, s.InvitationOutput)

    @extend_schema(request=s.InvitationInput, responses={201: s.InvitationCreatedOutput})
    def post(self, request):
        data = valid_data(s.InvitationInput, request)
        invitation, token = services.invitation_create(
            actor=self.membership,
            email=data["email"],
            role=data["role"],
            department_id=data.get("department"),
        )
        body = {**s.InvitationOutput(invitation).data, "token": token}
        return Response(body, status=status.HTTP_201_CREATED)


class InvitationDetailApi(TenantApi):
    required_permissions = {"GET": "invitation.manage", "DELETE": "invitation.manage"}

    @extend_schema(responses=s.InvitationOutput)
    def get(self, request, invitation_id: int):
        invitation = selectors.invitation_list().filter(pk=invitation_id).first()
        if invitation is None:
            raise NotFound("Invitation not found.")
        return Response(s.InvitationOutput(invitation).data)

    @extend_schema(responses=s.InvitationOutput)
    def delete(self, request, invitation_id: int):
        invitation = services.invitation_revoke(invitation_id=invitation_id)
        return Response(s.InvitationOutput(invitation).data)


class DepartmentListApi(TenantApi):
    required_permissions = {"GET": "member.read", "POST": "department.manage"}

    @extend_schema(responses=s.DepartmentOutput(many=True))
    def get(self, request):
        return paginated_response(selectors.department_list(), request, self, s.DepartmentOutput)

    @extend_schema(request=s.DepartmentInput, responses={201: s.DepartmentOutput})
    def post(self, request):
        data = valid_data(s.DepartmentInput, request)
        department = services.department_create(organization=self.organization, **data)
        return Response(s.DepartmentOutput(department).data, status=status.HTTP_201_CREATED)


class DepartmentDetailApi(TenantApi):
    required_permissions = {
        "GET": "member.read",
        "PATCH": "department.manage",
        "DELETE": "department.manage",
    }

    @extend_schema(responses=s.DepartmentOutput)
    def get(self, request, department_id: int):
        department = selectors.department_list().filter(pk=department_id).first()
        if department is None:
            raise NotFound("Department not found.")
        return Response(s.DepartmentOutput(department).data)

    @extend_schema(request=s.DepartmentUpdateInput, responses=s.DepartmentOutput)
    def patch(self, request, department_id: int):
        data = valid_data(s.DepartmentUpdateInput, request)
        department = services.department_update(department_id=department_id, **data)
        return Response(s.DepartmentOutput(department).data)

    @extend_schema(responses={204: None})
    def delete(self, request, department_id: int):
        services.department_delete(department_id=department_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class RoleListApi(TenantApi):
    required_permissions = {"GET": "member.read", "POST": "role.manage"}

    @extend_schema(responses=s.RoleOutput(many=True))
    def get(self, request):
        return Response(selectors.role_list())

    @extend_schema(request=s.RoleInput, responses={201: s.RoleOutput})
    def post(self, request):
        data = valid_data(s.RoleInput, request)
        role = services.role_create(organization=self.organization, **data)
        return Response(selectors.role_get(key=role.key), status=status.HTTP_201_CREATED)


class RoleDetailApi(TenantApi):
    required_permissions = {"GET": "member.read", "PATCH": "role.manage", "DELETE": "role.manage"}

    @extend_schema(responses=s.RoleOutput)
    def get(self, request, role_key: str):
        role = selectors.role_get(key=role_key)
        if role is None:
            raise NotFound("Role not found.")
        return Response(role)

    @extend_schema(request=s.RoleUpdateInput, responses=s.RoleOutput)
    def patch(self, request, role_key: str):
        data = valid_data(s.RoleUpdateInput, request)
        services.role_update(key=role_key, **data)
        return Response(selectors.role_get(key=role_key))

    @extend_schema(responses={204: None})
    def delete(self, request, role_key: str):
        services.role_delete(key=role_key)
        return Response(status=status.HTTP_204_NO_CONTENT)


class QuotaApi(TenantApi):
    """Limits in force and current usage. Changing them is for platform staff (billing)."""

    required_permissions = {"GET": "billing.read", "PATCH": "billing.read"}

    def _body(self) -> dict:
        return {
            "plan": self.organization.plan,
            "limits": services.quota_limits(organization=self.organization),
            "usage": selectors.quota_usage(organization=self.organization),
        }

    @extend_schema(responses=s.QuotaOutput)
    def get(self, request):
        return Response(self._body())

    @extend_schema(request=s.QuotaUpdateInput, responses=s.QuotaOutput)
    def patch(self, request):
        if not request.user.is_staff:
            raise PermissionDenied("Only platform staff change plans and quotas.")
        data = valid_data(s.QuotaUpdateInput, request)
        services.quota_update(organization=self.organization, **data)
        return Response(self._body())
