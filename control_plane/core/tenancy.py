"""Which organization a request acts for. The identity and tenancy issues deepen this (URL
prefix, API keys, row-level security); the rule stays: resolve once, then scope every query."""

from __future__ import annotations

from rest_framework.exceptions import NotFound, ValidationError

from control_plane.organizations.models import Organization


def organization_for_request(request) -> Organization:
    memberships = Organization.objects.filter(members__user=request.user)
    slug = request.headers.get("X-Organization", "").strip()
    if slug:
        organization = memberships.filter(slug=slug).first()
        if organization is None:
            raise NotFound("organization not found")
        return organization
    organizations = list(memberships[:2])
    if not organizations:
        raise NotFound("you are not a member of any organization")
    if len(organizations) > 1:
        raise ValidationError({"X-Organization": ["member of several organizations: name one"]})
    return organizations[0]


class OrganizationScopedMixin:
    """For API views: `self.organization` is resolved once, before the handler runs."""

    organization: Organization

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        self.organization = organization_for_request(request)
