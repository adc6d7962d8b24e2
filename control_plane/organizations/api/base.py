"""The base of every tenant API view: the organization comes from the middleware, and each
HTTP method needs a named permission (a scope map, as in Sentry), checked against the caller's
role. A method missing from the map is refused: new endpoints fail closed."""

from __future__ import annotations

from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.views import APIView

from control_plane.organizations import services
from control_plane.organizations.models import Organization, OrganizationMember


class HasOrganizationPermission(BasePermission):
    message = "Your role in this organization does not allow this."

    def has_permission(self, request, view) -> bool:
        if not hasattr(view, request.method.lower()):
            return True  # DRF answers 405
        membership = getattr(request._request, "membership", None)
        if membership is None:
            return False
        needed = view.required_permissions.get(request.method)
        if request.method in ("HEAD", "OPTIONS"):
            needed = view.required_permissions.get("GET")
        if needed is None:
            return False
        return needed in view.permissions()


class TenantApi(APIView):
    tenant_scoped = True
    permission_classes = [IsAuthenticated, HasOrganizationPermission]
    required_permissions: dict[str, str] = {}

    @property
    def organization(self) -> Organization:
        return self.request._request.organization

    @property
    def membership(self) -> OrganizationMember:
        return self.request._request.membership

    def permissions(self) -> frozenset[str]:
        if not hasattr(self, "_permissions"):
            self._permissions = services.role_permissions(role=self.membership.role)
        return self._permissions

    def dispatch(self, request, *args, **kwargs):
        kwargs.pop("org", None)  # resolved by OrganizationContextMiddleware
        return super().dispatch(request, *args, **kwargs)
