"""OrganizationContextMiddleware: which organization a request acts for, checked once.

For views marked `tenant_scoped`, the organization is the `org` slug in the URL
(`/api/v1/orgs/{org}/...`) or, on the short routes (`/api/v1/workflows`), the `X-Organization`
header (API clients), or the caller's only organization. The caller must be an active member;
anyone else gets the same 404 as for an organization that does not exist. The request then runs
in `tenant_context`: one transaction with `flowpilot.org_id` and `flowpilot.user_id` set, and
the organization in the context variable the ORM's tenant managers read. Every other signed-in
request runs with just `flowpilot.user_id` set (a user may list their own memberships)."""

from __future__ import annotations

from django.core.validators import slug_re
from django.db import transaction
from django.http import JsonResponse
from django.urls import Resolver404, resolve

from control_plane.core.errors import error_body
from control_plane.core.tenancy import tenant_context
from control_plane.organizations import selectors

ORG_HEADER = "X-Organization"


def _not_found() -> JsonResponse:
    return JsonResponse(error_body("not_found", "Organization not found."), status=404)


class OrganizationContextMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.organization = request.membership = None
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return self.get_response(request)  # the view answers 401 where it must
        try:
            match = resolve(request.path_info)
        except Resolver404:
            return self.get_response(request)
        view_class = getattr(match.func, "view_class", None)
        if getattr(view_class, "own_transaction", False):
            return self.get_response(request)  # it commits before it answers (webhooks)
        with tenant_context(None, user_id=user.pk):
            if not getattr(view_class, "tenant_scoped", False):
                return self._respond(request)
            slug = match.kwargs.get("org") or request.headers.get(ORG_HEADER, "").strip()
            if slug and not slug_re.match(slug):
                return _not_found()  # no organization has it (and it may not reach SQL: NUL)
            if slug:
                membership = selectors.membership_for(user=user, slug=slug)
            else:
                memberships = list(selectors.memberships_of(user=user)[:2])
                if len(memberships) != 1:
                    message = (
                        "You are a member of several organizations: name one in the URL "
                        f"(/api/v1/orgs/<slug>/...) or the {ORG_HEADER} header."
                        if memberships
                        else "You are not a member of any organization."
                    )
                    code = "organization_required" if memberships else "not_found"
                    return JsonResponse(
                        error_body(code, message), status=400 if memberships else 404
                    )
                membership = memberships[0]
            if membership is None:
                return _not_found()
        request.organization, request.membership = membership.organization, membership
        with tenant_context(membership.organization_id, user_id=user.pk):
            return self._respond(request)

    def _respond(self, request):
        response = self.get_response(request)
        if response.status_code >= 500:
            transaction.set_rollback(True)  # a crash keeps nothing half-done
        return response
