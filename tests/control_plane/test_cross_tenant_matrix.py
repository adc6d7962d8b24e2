"""The cross-tenant matrix. Every API URL pattern is enumerated from the URL resolver: an
endpoint inside an organization must have a case for each of its path parameters, and any other
endpoint must be listed as an account endpoint, so a new endpoint without a case fails here.

For every tenant endpoint and every method it implements, the owner of globex tries acme's
objects: through acme's URL, through globex's URL with acme's ids, and through the short routes
with either X-Organization header. Every attempt gets 404 (never 200, 403 or 500), lists show
none of acme's data, and acme's rows are unchanged afterwards. The matrix runs twice: as the
superuser (the ORM's tenant scoping alone) and as the application role (row-level security
too)."""

from __future__ import annotations

import json
import re

import pytest
from rest_framework.test import APIClient

from control_plane.connectors import services as connector_services
from control_plane.connectors.models import Connector
from control_plane.core.tenancy import tenant_context
from control_plane.executions.logs import execution_log_write
from control_plane.executions.models import ExecutionLog, WorkflowExecution
from control_plane.organizations import services as organization_services
from control_plane.organizations.models import (
    Department,
    Invitation,
    OrganizationMember,
    Role,
)
from control_plane.workflows import templates, triggers, variables
from control_plane.workflows.models import (
    Workflow,
    WorkflowTemplate,
    WorkflowTrigger,
    WorkflowVariable,
    WorkflowVersion,
)
from tests.api_routes import api_routes
from tests.conftest import bearer_token
from tests.factories import THREE_STEPS, make_member, make_published_workflow, run_workflow

pytestmark = pytest.mark.django_db

# Endpoints that belong to the signed-in user, not to an organization (cross-user cases are in
# test_auth, test_mfa, test_oidc and test_organizations_api).
ACCOUNT_ENDPOINTS = {
    "auth/register",
    "auth/login",
    "auth/login/mfa",
    "auth/logout",
    "auth/email/verify",
    "auth/email/verify/resend",
    "auth/password/reset",
    "auth/password/reset/confirm",
    "auth/oidc/<str:provider>/start",
    "auth/oidc/<str:provider>/callback",
    "users/me",
    "users/me/password",
    "users/me/sessions",
    "users/me/sessions/revoke-others",
    "users/me/sessions/<int:session_id>",
    "users/me/login-attempts",
    "users/me/mfa",
    "users/me/mfa/totp",
    "users/me/mfa/totp/confirm",
    "users/me/mfa/backup-codes",
    "users/me/mfa/disable",
    "users/me/connections",
    "users/me/connections/<int:connection_id>",
    "orgs",
    "invitations/accept",
    "permissions",
    "workflows/schema",
    "hooks/<str:token>",
}
SECRET = "acme-secret"
METHODS = ("get", "post", "put", "patch", "delete")
# Valid bodies, so that a refusal can only be about the object, not the input.
BODIES = {
    "patch": {"name": f"pwned {SECRET}", "role": "viewer"},
    "post": {"inputs": {}, "name": "pwned", "email": "x@pwned.test", "key": "pwned"},
}


@pytest.fixture
def world(org, other_org, user):
    """acme, full of objects whose names carry SECRET; globex, owned by mallory, with its own."""
    make_member(org, "carol@acme-secret.test", role="editor")
    make_published_workflow(org, user, THREE_STEPS, slug=f"{SECRET}-flow")
    workflow = Workflow.objects.unscoped().get(organization=org)
    execution = run_workflow(workflow)
    with tenant_context(org.pk):
        execution_log_write(
            organization_id=org.pk,
            execution_id=execution.pk,
            lines=[{"step_id": "greet", "message": f"step 'greet' logged {SECRET}"}],
        )
    with tenant_context(org.pk, user_id=user.pk):
        department = Department.objects.create(organization=org, name=f"{SECRET} dept")
        role = organization_services.role_create(
            organization=org,
            key=f"{SECRET}-role",
            name=SECRET,
            permissions=["workflow.read"],
            description=SECRET,
        )
        owner = OrganizationMember.objects.get(user=user)
        variable = variables.variable_create(
            organization=org,
            created_by=user,
            workflow=workflow,
            name="acme_secret_var",
            value=SECRET,
            is_secret=True,
        )
        variables.variable_create(
            organization=org, created_by=user, name="acme_org_var", value=SECRET
        )
        connector = connector_services.connector_create(
            organization=org,
            created_by=user,
            name=f"{SECRET}-slack",
            kind="slack",
            credentials={"bot_token": f"xoxb-{SECRET}"},
        )
        trigger = triggers.trigger_create(
            workflow=workflow, created_by=user, kind="webhook", name=SECRET, signing=True
        )
        templates.template_create(
            organization=org,
            created_by=user,
            slug=f"{SECRET}-template",
            name=SECRET,
            description=SECRET,
            definition={"steps": [], "note": SECRET},
        )
        invitation, _ = organization_services.invitation_create(
            actor=owner, email=f"invitee@{SECRET}.test", role="viewer"
        )
    mallory = make_member(other_org, "mallory@globex.test")
    make_published_workflow(other_org, mallory, THREE_STEPS, slug="globex-flow")
    run_workflow(Workflow.objects.unscoped().get(organization=other_org))
    acme_ids = {
        "org": org.slug,
        "workflow_id": workflow.pk,
        "execution_id": execution.pk,
        "member_id": OrganizationMember.objects.unscoped().get(user__email__startswith="carol").pk,
        "invitation_id": invitation.pk,
        "department_id": department.pk,
        "role_key": role.key,
        "number": 1,
        "variable_id": variable.pk,
        "trigger_id": trigger.pk,
        "template_slug": f"{SECRET}-template",
        "connector_id": connector.pk,
    }
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {bearer_token(mallory)}")
    return {"acme": org, "globex": other_org, "ids": acme_ids, "client": client}


def acme_snapshot(org) -> str:
    rows = {
        model.__name__: sorted(
            json.dumps(row, default=str, sort_keys=True)
            for row in model.objects.unscoped().filter(organization=org).values()
        )
        for model in (
            Workflow,
            WorkflowVersion,
            WorkflowExecution,
            ExecutionLog,
            OrganizationMember,
            Department,
            Role,
            Invitation,
            WorkflowVariable,
            WorkflowTrigger,
            WorkflowTemplate,
            Connector,
        )
    }
    return json.dumps(rows, sort_keys=True)


def _path(route: str, values: dict) -> str:
    def fill(match: re.Match) -> str:
        name = match.group(1)
        if name not in values:
            raise AssertionError(f"no cross-tenant case for the path parameter <{name}> of {route}")
        return str(values[name])

    return "/api/v1/" + re.sub(r"<(?:\w+:)?(\w+)>", fill, route)


def _call(client: APIClient, method: str, path: str, **headers):
    body = BODIES.get(method)
    return getattr(client, method)(path, body, format="json", **headers)


def test_every_api_endpoint_is_classified():
    for route, view in api_routes():
        if getattr(view, "tenant_scoped", False):
            assert view.required_permissions, f"{route}: tenant view without a scope map"
            for method in METHODS:
                if hasattr(view, method):
                    assert method.upper() in view.required_permissions, (route, method)
        else:
            assert route in ACCOUNT_ENDPOINTS, f"{route}: neither tenant-scoped nor listed"


@pytest.mark.parametrize("role", ["superuser", "app_role"])
def test_nobody_reaches_another_organizations_objects(world, role, request):
    if role == "app_role":
        request.getfixturevalue("as_app_role")
    client, ids, acme = world["client"], world["ids"], world["acme"]
    before = acme_snapshot(acme)
    tenant_routes = [(r, v) for r, v in api_routes() if getattr(v, "tenant_scoped", False)]
    assert len(tenant_routes) >= 20
    failures: list[str] = []
    attempts: list[str] = []

    def expect(response, what: str, *, status: int | None = 404) -> None:
        attempts.append(what)
        text = response.content.decode()
        if status is not None and response.status_code != status:
            failures.append(f"{what}: {response.status_code} {text[:120]}")
        elif SECRET in text or "alice@acme.test" in text:
            failures.append(f"{what}: shows acme's data: {text[:120]}")

    for route, view in tenant_routes:
        methods = [m for m in METHODS if hasattr(view, m)]
        object_route = bool(set(re.findall(r"<(?:\w+:)?(\w+)>", route)) - {"org"})
        short = route.removeprefix("orgs/<slug:org>/")
        for method in methods:
            if route.startswith("orgs/<slug:org>"):
                # acme's URL, as a non-member.
                path = _path(route, ids)
                expect(_call(client, method, path), f"{method} {path}")
                # globex's URL with acme's ids.
                path = _path(route, {**ids, "org": "globex"})
                if object_route:
                    expect(_call(client, method, path), f"{method} {path} (globex URL)")
                elif method == "get":
                    expect(_call(client, method, path), f"{method} {path}", status=200)
            if short != route or not route.startswith("orgs/"):
                # The short routes, naming acme in the header, then globex with acme's ids.
                path = _path(short, ids)
                header = {"HTTP_X_ORGANIZATION": acme.slug}
                expect(_call(client, method, path, **header), f"{method} {path} as acme")
                header = {"HTTP_X_ORGANIZATION": "globex"}
                if object_route:
                    expect(_call(client, method, path, **header), f"{method} {path} as globex")
                elif method == "get":
                    expect(_call(client, method, path, **header), f"{method} {path}", status=200)
    assert failures == []
    assert len(attempts) >= 100
    assert acme_snapshot(acme) == before
