"""Reads of the organization's connectors (the one in context: TenantManager). Credentials are
decrypted only by `connector_credentials`, which ops call at run time."""

from __future__ import annotations

import json
from typing import Any

from django.db.models import OuterRef, QuerySet, Subquery

from control_plane.connectors.models import Connector
from control_plane.core.errors import NotFoundError
from control_plane.workflows.models import Workflow, WorkflowVersion


def connector_list(*, kind: str = "", search: str = "") -> QuerySet[Connector]:
    """By name; the credentials column is not loaded (the API never shows it)."""
    qs = Connector.objects.defer("credentials").order_by("name", "id")
    if kind:
        qs = qs.filter(kind=kind)
    if search:
        qs = qs.filter(name__icontains=search)
    return qs


def connector_get(*, connector_id: int) -> Connector:
    connector = connector_list().filter(pk=connector_id).first()
    if connector is None:
        raise NotFoundError("connector not found")
    return connector


def connector_kinds(*, organization_id: int) -> dict[str, str]:
    """name -> kind of the organization's connectors: what `config.connector` may name, for
    definition validation."""
    qs = Connector.objects.filter(organization_id=organization_id)
    return dict(qs.values_list("name", "kind"))


def credential_values(connector: Connector) -> dict[str, Any]:
    return json.loads(connector.credentials) if connector.credentials else {}


def connector_credentials(*, organization_id: int, name: str) -> dict[str, Any]:
    """The decrypted credentials of the connector a step names. Only for ops at run time,
    inside tenant_context(organization_id): never for the API, logs or run config."""
    connector = Connector.objects.filter(organization_id=organization_id, name=name).first()
    if connector is None:
        raise NotFoundError(
            f"connector '{name}' not found: it was deleted or renamed after this version was "
            "published; create it again or publish a version that names another"
        )
    return credential_values(connector)


def _named_connectors(definition: Any) -> set[str]:
    steps = definition.get("steps") if isinstance(definition, dict) else None
    names: set[str] = set()
    for step in steps if isinstance(steps, list) else []:
        config = step.get("config") if isinstance(step, dict) else None
        if isinstance(config, dict) and isinstance(config.get("connector"), str):
            names.add(config["connector"])
    return names


def workflows_using(*, name: str) -> list[Workflow]:
    """Workflows (not archived) whose latest published version names the connector: they would
    fail at run time without it."""
    latest = (
        WorkflowVersion.objects.filter(workflow=OuterRef("workflow"))
        .order_by("-number")
        .values("pk")[:1]
    )
    versions = (
        WorkflowVersion.objects.filter(pk=Subquery(latest))
        .exclude(workflow__status=Workflow.Status.ARCHIVED)
        .select_related("workflow")
        .order_by("workflow__name", "workflow_id")
    )
    return [v.workflow for v in versions if name in _named_connectors(v.definition)]
