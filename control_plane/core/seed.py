"""The demo tenant: an organization, a verified user with a fresh API session, and a published
workflow. Idempotent but for the session: each run signs in once more and returns that token."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from control_plane.core.errors import ConflictError
from control_plane.core.tenancy import tenant_context
from control_plane.organizations import services as organization_services
from control_plane.organizations.models import Organization, OrganizationMember
from control_plane.organizations.permissions import OWNER
from control_plane.users.models import User
from control_plane.users.sessions import session_create
from control_plane.workflows import services as workflow_services
from control_plane.workflows.models import Workflow, WorkflowVersion

DEMO_EMAIL = "demo@flowpilot.local"
DEMO_PASSWORD = "flowpilot-demo"
DEMO_ORG = "demo"
DEMO_WORKFLOW = "hello-flowpilot"

DEMO_DEFINITION = {
    "inputs": {
        "name": {"type": "string", "default": "world", "description": "Who to greet"},
        "url": {"type": "string", "description": "An HTTP endpoint to call"},
    },
    "steps": [
        {
            "id": "compose",
            "type": "transform.template",
            "name": "Compose a greeting",
            "config": {"template": "Hello, {{ inputs.name }}!"},
        },
        {
            "id": "call",
            "type": "http.request",
            "name": "Send it to an HTTP endpoint",
            "after": ["compose"],
            "config": {
                "url": "{{ inputs.url }}",
                "method": "POST",
                "json_body": {"greeting": "{{ steps.compose.output.result }}"},
            },
        },
        {
            "id": "report",
            "type": "transform.template",
            "name": "Report what came back",
            "after": ["call"],
            "config": {
                "template": "{{ steps.call.output.status_code }}: "
                "{{ steps.call.output.body.echo.greeting }}"
            },
        },
    ],
}


@dataclass(frozen=True)
class DemoSeed:
    user: User
    token: str
    organization: Organization
    workflow: Workflow
    version: WorkflowVersion


@transaction.atomic
def seed_demo() -> DemoSeed:
    user = User.objects.filter(email=DEMO_EMAIL).first()
    if user is None:
        user = User.objects.create_user(
            DEMO_EMAIL, DEMO_PASSWORD, name="Demo User", is_staff=True, email_verified=True
        )
    _, token = session_create(user=user, kind="api", ip=None, user_agent="flowpilot seed")
    organization = Organization.objects.filter(slug=DEMO_ORG).first()
    if organization is None:
        organization = organization_services.organization_create(
            name="Demo Organization", slug=DEMO_ORG, owner=user
        )
    with tenant_context(organization.pk, user_id=user.pk):
        OrganizationMember.objects.get_or_create(
            organization=organization, user=user, defaults={"role": OWNER}
        )
        workflow = Workflow.objects.filter(slug=DEMO_WORKFLOW).first()
        if workflow is None:
            workflow = workflow_services.workflow_create(
                organization=organization,
                created_by=user,
                name="Hello FlowPilot",
                slug=DEMO_WORKFLOW,
                description="Compose a greeting, POST it to an HTTP endpoint, report the answer.",
                definition=DEMO_DEFINITION,
            )
        elif workflow.draft_definition != DEMO_DEFINITION:
            workflow_services.workflow_update(workflow=workflow, draft_definition=DEMO_DEFINITION)
        try:
            version = workflow_services.workflow_publish(
                workflow=workflow, published_by=user, changelog="demo seed"
            )
        except ConflictError:
            version = workflow.versions.order_by("-number").first()
    return DemoSeed(user, token, organization, workflow, version)
