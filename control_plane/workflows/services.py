from __future__ import annotations

import logging
from typing import Any

from django.db import IntegrityError, transaction
from django.utils.text import slugify

from control_plane.core import dagster
from control_plane.core.errors import ApplicationError, ConflictError
from control_plane.organizations.models import Organization
from control_plane.users.models import User
from control_plane.workflows.models import Workflow, WorkflowVersion
from orchestration.steps import definition as definitions

log = logging.getLogger(__name__)


def definition_errors(definition: Any) -> list[dict[str, Any]]:
    return [error.as_dict() for error in definitions.validate(definition)]


def raise_if_invalid(definition: Any, *, prefix: str = "definition") -> None:
    errors = definitions.validate(definition)
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


@transaction.atomic
def workflow_update(*, workflow: Workflow, **changes: Any) -> Workflow:
    allowed = {"name", "description", "draft_definition"}
    for field, value in changes.items():
        if field not in allowed:
            raise ApplicationError(f"'{field}' cannot be changed", fields={field: ["read-only"]})
        setattr(workflow, field, value)
    workflow.full_clean(exclude=["organization", "created_by"], validate_unique=False)
    workflow.save()
    return workflow


def workflow_publish(
    *, workflow: Workflow, published_by: User | None, changelog: str = ""
) -> WorkflowVersion:
    """Publish the draft as the next immutable version and ask Dagster to load it."""
    caller_copy = workflow
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
        raise_if_invalid(workflow.draft_definition)
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
        transaction.on_commit(dagster.reload_code_location)
    caller_copy.status = workflow.status
    log.info(
        "workflow published",
        extra={"workflow_id": workflow.pk, "version": version.number, "hash": digest[:12]},
    )
    return version
