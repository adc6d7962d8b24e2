from __future__ import annotations

import logging
from typing import Any

from django.db import IntegrityError, transaction
from django.utils.text import slugify

from control_plane.connectors.selectors import connector_kinds
from control_plane.core import dagster
from control_plane.core.errors import ApplicationError, ConflictError, NotFoundError
from control_plane.organizations.models import Organization
from control_plane.users.models import User
from control_plane.workflows.models import Workflow, WorkflowVersion
from control_plane.workflows.variables import variable_names
from orchestration.steps import definition as definitions

log = logging.getLogger(__name__)


def definition_errors(
    definition: Any,
    *,
    variables: set[str] | None = None,
    connectors: definitions.Connectors | None = None,
) -> list[dict[str, Any]]:
    errors = definitions.validate(definition, variables=variables, connectors=connectors)
    return [error.as_dict() for error in errors]


def raise_if_invalid(
    definition: Any,
    *,
    prefix: str = "definition",
    variables: set[str] | None = None,
    connectors: definitions.Connectors | None = None,
) -> None:
    errors = definitions.validate(definition, variables=variables, connectors=connectors)
    if not errors:
        return
    fields: dict[str, list[str]] = {}
    for error in errors:
        where = f"{prefix}.{error.path}" if error.path != "definition" else prefix
        text = f"step '{error.step}': {error.message}" if error.step else error.message
        fields.setdefault(where, []).append(text)
    first = errors[0]
    lead = f"step '{first.step}' " if first.step else ""
    raise ApplicationError(
        f"invalid workflow definition: {lead}{first.path}: {first.message}",
        code="invalid_definition",
        fields=fields,
        details=[error.as_dict() for error in errors],
    )


@transaction.atomic
def workflow_create(
    *,
    organization: Organization,
    created_by: User | None,
    name: str,
    slug: str = "",
    description: str = "",
    definition: dict[str, Any] | None = None,
) -> Workflow:
    """Create a draft. Drafts may be incomplete; publishing demands a valid definition."""
    slug = slug or slugify(name)[:60]
    if not slug:
        raise ApplicationError("name must contain letters or digits", fields={"name": ["invalid"]})
    workflow = Workflow(
        organization=organization,
        name=name,
        slug=slug,
        description=description,
        draft_definition=definition or {},
        created_by=created_by,
        owner=created_by,
    )
    workflow.full_clean(exclude=["organization", "created_by"], validate_unique=False)
    try:
        with transaction.atomic():
            workflow.save()
    except IntegrityError as exc:
        raise ConflictError(
            f"a workflow with slug '{slug}' exists", fields={"slug": ["already taken"]}
        ) from exc
    return workflow


# Status changes a user may make, from -> to. Publishing is what makes a draft active.
STATUS_CHANGES = {
    Workflow.Status.ACTIVE: {Workflow.Status.PAUSED, Workflow.Status.ARCHIVED},
    Workflow.Status.PAUSED: {Workflow.Status.ACTIVE, Workflow.Status.ARCHIVED},
    Workflow.Status.DRAFT: {Workflow.Status.ARCHIVED},
    Workflow.Status.ARCHIVED: {Workflow.Status.PAUSED, Workflow.Status.DRAFT},
}


@transaction.atomic
def workflow_update(*, workflow: Workflow, **changes: Any) -> Workflow:
    """Change the draft and the workflow's details. Pausing or archiving takes the job out of
    the Dagster code location (runs in flight finish); resuming puts it back."""
    allowed = {"name", "description", "draft_definition", "owner", "department", "status"}
    allowed |= {"priority"}
    for field in changes:
        if field not in allowed:
            raise ApplicationError(f"'{field}' cannot be changed", fields={field: ["read-only"]})
    status = changes.pop("status", workflow.status)
    if status != workflow.status:
        if status not in STATUS_CHANGES.get(workflow.status, set()):
            raise ConflictError(
                f"a {workflow.status} workflow cannot become {status}",
                code="invalid_status_change",
                fields={"status": [f"not allowed from {workflow.status}"]},
            )
        if status == Workflow.Status.ACTIVE and not workflow.versions.exists():
            raise ConflictError(
                "publish the workflow to make it active", fields={"status": ["not published"]}
            )
        if Workflow.Status.ACTIVE in (status, workflow.status):
            dagster.reload_on_commit(workflow.organization_id)
        workflow.status = status
    priority = changes.get("priority", workflow.priority)
    if priority != workflow.priority and status == Workflow.Status.ACTIVE:
        dagster.reload_on_commit(workflow.organization_id)  # the job's dagster/priority tag
    for field, value in changes.items():
        setattr(workflow, field, value)
    workflow.full_clean(exclude=["organization", "created_by"], validate_unique=False)
    workflow.save()
    return workflow


@transaction.atomic
def workflow_rollback(
    *, workflow: Workflow, number: int, published_by: User | None
) -> WorkflowVersion:
    """Publish an earlier version's definition again, as the next version (history is never
    rewritten). The draft becomes that definition too."""
    old = workflow.versions.filter(number=number).first()
    if old is None:
        raise NotFoundError(f"version {number} not found")
    workflow.draft_definition = old.definition
    workflow.save(update_fields=["draft_definition", "updated_at"])
    return workflow_publish(
        workflow=workflow, published_by=published_by, changelog=f"roll back to version {number}"
    )


EXPORT_FORMAT = 1


def workflow_export(*, workflow: Workflow) -> dict[str, Any]:
    """The portable form of a workflow: what import needs to recreate it exactly."""
    return {
        "flowpilot_workflow": EXPORT_FORMAT,
        "name": workflow.name,
        "slug": workflow.slug,
        "description": workflow.description,
        "definition": workflow.draft_definition,
    }


def workflow_import(
    *, organization: Organization, created_by: User | None, document: Any, slug: str = ""
) -> Workflow:
    """Create a draft from an exported document (JSON or YAML, already parsed)."""
    if not isinstance(document, dict) or document.get("flowpilot_workflow") != EXPORT_FORMAT:
        raise ApplicationError(
            "not a FlowPilot workflow export (expected 'flowpilot_workflow: 1')",
            code="invalid_import",
            fields={"flowpilot_workflow": [f"must be {EXPORT_FORMAT}"]},
        )
    fields: dict[str, list[str]] = {}
    for key, kind in (("name", str), ("slug", str), ("description", str), ("definition", dict)):
        if key in document and not isinstance(document[key], kind):
            fields[key] = [f"must be a {'string' if kind is str else 'mapping'}"]
    unknown = set(document) - {"flowpilot_workflow", "name", "slug", "description", "definition"}
    for key in sorted(unknown):
        fields[key] = ["unknown field"]
    if not document.get("name"):
        fields.setdefault("name", ["required"])
    if fields:
        raise ApplicationError(
            f"invalid import: {next(iter(fields))}", code="invalid_import", fields=fields
        )
    return workflow_create(
        organization=organization,
        created_by=created_by,
        name=document["name"],
        slug=slug or document.get("slug", ""),
        description=document.get("description", ""),
        definition=document.get("definition") or {},
    )


def workflow_publish(
    *, workflow: Workflow, published_by: User | None, changelog: str = ""
) -> WorkflowVersion:
    """Publish the draft as the next immutable version and ask Dagster to load it."""
    caller_copy = workflow
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
        names = variable_names(organization_id=workflow.organization_id, workflow=workflow)
        connectors = connector_kinds(organization_id=workflow.organization_id)
        raise_if_invalid(workflow.draft_definition, variables=names, connectors=connectors)
        digest = definitions.content_hash(workflow.draft_definition)
        latest = workflow.versions.order_by("-number").first()
        if latest and latest.content_hash == digest:
            raise ConflictError(
                f"version {latest.number} already has this definition",
                code="unchanged",
                fields={"definition": ["identical to the latest published version"]},
            )
        version = WorkflowVersion.objects.create(
            organization_id=workflow.organization_id,
            workflow=workflow,
            number=(latest.number + 1) if latest else 1,
            definition=workflow.draft_definition,
            content_hash=digest,
            changelog=changelog,
            created_by=published_by,
        )
        if workflow.status != Workflow.Status.ACTIVE:
            workflow.status = Workflow.Status.ACTIVE
            workflow.save(update_fields=["status", "updated_at"])
        dagster.reload_on_commit(workflow.organization_id)
    caller_copy.status = workflow.status
    log.info(
        "workflow published",
        extra={"workflow_id": workflow.pk, "version": version.number, "hash": digest[:12]},
    )
    return version
