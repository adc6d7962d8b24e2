from __future__ import annotations

import copy

from control_plane.organizations.models import Organization, OrganizationMember
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
    return Organization.objects.create(name=slug.title(), slug=slug)


def make_member(organization: Organization, email: str, role: str = "owner") -> User:
    user = User.objects.create_user(email, PASSWORD, email_verified=True)
    OrganizationMember.objects.create(organization=organization, user=user, role=role)
    return user


def make_published_workflow(organization, user, definition_: dict, slug: str = "triage"):
    workflow = workflow_services.workflow_create(
        organization=organization,
        created_by=user,
        name=slug.title(),
        slug=slug,
        definition=definition_,
    )
    workflow_services.workflow_publish(workflow=workflow, published_by=user)
    return workflow
