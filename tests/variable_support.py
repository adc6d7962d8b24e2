"""Helpers shared by the variable API tests and the run-time tests."""

from __future__ import annotations

from control_plane.core.tenancy import tenant_context
from control_plane.workflows import variables as variable_services
from control_plane.workflows.models import WorkflowVariable

SECRET = "sk-live-7f3a9c1e5b2d4680"


def template_definition(template: str) -> dict:
    return {
        "steps": [{"id": "say", "type": "transform.template", "config": {"template": template}}]
    }


def make_variable(organization, name, value, *, workflow=None, **kwargs) -> WorkflowVariable:
    kwargs.setdefault("type", "string")
    with tenant_context(organization.pk):
        return variable_services.variable_create(
            organization=organization,
            created_by=None,
            workflow=workflow,
            name=name,
            value=value,
            **kwargs,
        )
