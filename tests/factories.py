from __future__ import annotations

import copy

from control_plane.core.tenancy import tenant_context
from control_plane.executions import services as execution_services
from control_plane.organizations.models import Organization, OrganizationMember, UsageQuota
from control_plane.users.models import User
from control_plane.workflows import services as workflow_services

THREE_STEPS = {
    "inputs": {"name": {"type": "string", "default": "world"}},
    "steps": [
        {
            "id": "greet",
            "type": "transform.template",
            "config": {"template": "Hi {{ inputs.name }}"},
        },
        {
            "id": "shout",
            "type": "transform.template",
            "after": ["greet"],
            "config": {"template": "{{ steps.greet.output.result | upper }}"},
        },
        {
            "id": "length",
            "type": "transform.template",
            "after": ["greet"],
            "config": {"template": "{{ steps.greet.output.result | length }}"},
        },
    ],
}


def definition(**overrides) -> dict:
    result = copy.deepcopy(THREE_STEPS)
    result.update(overrides)
    return result


PASSWORD = "correct horse battery staple"


def make_organization(slug: str) -> Organization:
    organization = Organization.objects.create(name=slug.title(), slug=slug)
    with tenant_context(organization.pk):
        UsageQuota.objects.create(organization=organization)
    return organization


def make_member(organization: Organization, email: str, role: str = "owner") -> User:
    user = User.objects.filter(email=email).first() or User.objects.create_user(
        email, PASSWORD, email_verified=True
    )
    with tenant_context(organization.pk):
        OrganizationMember.objects.create(organization=organization, user=user, role=role)
    return user


def make_published_workflow(organization, user, definition_: dict, slug: str = "triage"):
    with tenant_context(organization.pk):
        workflow = workflow_services.workflow_create(
            organization=organization,
            created_by=user,
            name=slug.title(),
            slug=slug,
            definition=definition_,
        )
        workflow_services.workflow_publish(workflow=workflow, published_by=user)
    return workflow


def run_workflow(workflow, **kwargs):
    """workflow_run as its organization's API request would call it."""
    with tenant_context(workflow.organization_id):
        return execution_services.workflow_run(workflow=workflow, **kwargs)


def steps_of(execution):
    """An execution's steps, read as a system observer (no tenant context needed)."""
    from control_plane.executions.models import ExecutionStep

    return ExecutionStep.objects.unscoped().filter(execution=execution).order_by("position")
