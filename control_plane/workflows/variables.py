"""Workflow variables: named, typed values that steps read as `{{ vars.name }}`, for one
workflow or for every workflow of the organization (a workflow's own variable of the same name
wins). Services and selectors in one module because they share the validation rules.

Secret values are encrypted at rest (`secret_value`, JSON text) and leave the database only
through `variables_for_run`, which the control-plane resource calls when an op runs: never
through the API, never into Dagster run config."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet

from control_plane.core.errors import ApplicationError, ConflictError, NotFoundError
from control_plane.organizations.models import Organization
from control_plane.users.models import User
from control_plane.workflows.models import Workflow, WorkflowVariable

NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
MAX_VALUE_BYTES = 64 * 1024
Type = WorkflowVariable.Type
_UPDATABLE = {"name", "type", "description", "value", "is_secret"}


# Validation -------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ApplicationError(
            f"invalid variable name {name!r}: use letters, digits and _, not starting with a "
            "digit, at most 63 characters (it is written as vars.<name> in templates)",
            fields={"name": ["must be an identifier: ^[A-Za-z_][A-Za-z0-9_]{0,62}$"]},
        )
    if name.startswith("__"):
        raise ApplicationError(
            f"invalid variable name {name!r}: names starting with '__' are reserved",
            fields={"name": ["names starting with '__' are reserved"]},
        )


def _json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _matches(type_: str, value: Any) -> bool:
    if type_ == Type.STRING:
        return isinstance(value, str)
    if type_ == Type.INTEGER:
        return isinstance(value, int) and not isinstance(value, bool)
    if type_ == Type.NUMBER:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if type_ == Type.BOOLEAN:
        return isinstance(value, bool)
    return type_ == Type.JSON


def _encode(type_: str, value: Any) -> str:
    """The value as JSON text, after checking it fits the type and the size limit."""
    if type_ not in Type.values:
        raise ApplicationError(
            f"unknown variable type {type_!r}",
            fields={"type": [f"one of: {', '.join(Type.values)}"]},
        )
    if not _matches(type_, value):
        message = f"expected {type_}, got {_json_type_name(value)}"
        raise ApplicationError(f"value: {message}", fields={"value": [message]})
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        message = "must be JSON (finite numbers, strings, booleans, null, arrays, objects)"
        raise ApplicationError(f"value: {message}", fields={"value": [message]}) from exc
    if isinstance(value, float) and not math.isfinite(value):  # allow_nan covers it; be explicit
        raise ApplicationError("value: must be finite", fields={"value": ["must be finite"]})
    size = len(text.encode())
    if size > MAX_VALUE_BYTES:
        message = f"is {size} bytes as JSON, over the {MAX_VALUE_BYTES}-byte limit"
        raise ApplicationError(f"value: {message}", fields={"value": [message]})
    return text


def _stored_value(variable: WorkflowVariable) -> Any:
    if variable.is_secret:
        return json.loads(variable.secret_value) if variable.secret_value else None
    return variable.value


def _assign_value(variable: WorkflowVariable, value: Any) -> None:
    text = _encode(variable.type, value)
    if variable.is_secret:
        variable.value = None
        variable.secret_value = text
    else:
        variable.value = value
        variable.secret_value = ""


def _save(variable: WorkflowVariable) -> None:
    variable.full_clean(
        exclude=["organization", "workflow", "created_by", "value", "secret_value"],
        validate_unique=False,
        validate_constraints=False,
    )
    scope = "this workflow" if variable.workflow_id else "the organization"
    try:
        with transaction.atomic():
            variable.save()
    except IntegrityError as exc:
        raise ConflictError(
            f"{scope} already has a variable named '{variable.name}'",
            fields={"name": ["already taken"]},
        ) from exc


# Services ---------------------------------------------------------------------------------


@transaction.atomic
def variable_create(
    *,
    organization: Organization,
    created_by: User | None,
    name: str,
    type: str = Type.STRING,  # the field's name in the API and the model
    value: Any,
    workflow: Workflow | None = None,
    description: str = "",
    is_secret: bool = False,
) -> WorkflowVariable:
    """Define a variable for the organization (`workflow` None) or for one of its workflows."""
    if workflow is not None and workflow.organization_id != organization.pk:
        raise NotFoundError("workflow not found")
    _check_name(name)
    variable = WorkflowVariable(
        organization=organization,
        workflow=workflow,
        name=name,
        type=type,
        description=description,
        is_secret=is_secret,
        created_by=created_by,
    )
    _assign_value(variable, value)
    _save(variable)
    return variable


@transaction.atomic
def variable_update(*, variable: WorkflowVariable, **changes: Any) -> WorkflowVariable:
    """Change any of name, type, description, value, is_secret. A secret can be replaced but
    not read: turning it public needs a new value, or the flag would reveal the old one."""
    for field in changes:
        if field not in _UPDATABLE:
            raise ApplicationError(f"'{field}' cannot be changed", fields={field: ["read-only"]})
    was_secret = variable.is_secret
    if was_secret and changes.get("is_secret") is False and "value" not in changes:
        message = "a secret made public needs a new value (its secret value is never revealed)"
        raise ApplicationError(message, fields={"value": [message]})
    value = changes["value"] if "value" in changes else _stored_value(variable)
    if "name" in changes:
        _check_name(changes["name"])
        variable.name = changes["name"]
    for field in ("type", "description", "is_secret"):
        if field in changes:
            setattr(variable, field, changes[field])
    _assign_value(variable, value)
    _save(variable)
    return variable


@transaction.atomic
def variable_delete(*, variable: WorkflowVariable) -> None:
    """Published versions that read it fail at run time with "unknown variable" until it is
    defined again; the next publish of such a workflow is refused."""
    variable.delete()


# Selectors --------------------------------------------------------------------------------


def variable_list(*, workflow: Workflow | None = None, search: str = "") -> QuerySet:
    """The organization's own variables (`workflow` None) or one workflow's, by name. The
    organization is the one in context (TenantManager); secret columns are not loaded."""
    qs = WorkflowVariable.objects.defer("secret_value").order_by("name", "id")
    qs = qs.filter(workflow=workflow) if workflow is not None else qs.filter(workflow__isnull=True)
    if search:
        qs = qs.filter(name__icontains=search)
    return qs


def variable_get(*, variable_id: int, workflow: Workflow | None = None) -> WorkflowVariable:
    """A variable of the scope the URL names: an organization variable is not found under a
    workflow's URL, nor another workflow's variable, nor another organization's."""
    variable = variable_list(workflow=workflow).filter(pk=variable_id).first()
    if variable is None:
        raise NotFoundError("variable not found")
    return variable


def variable_names(*, organization_id: int, workflow: Workflow | None = None) -> set[str]:
    """The names `{{ vars.x }}` may use in a workflow's definition (None: the organization's
    variables only), for validation."""
    scope = Q(workflow__isnull=True)
    if workflow is not None:
        scope |= Q(workflow_id=workflow.pk)
    qs = WorkflowVariable.objects.filter(scope, organization_id=organization_id)
    return set(qs.values_list("name", flat=True))


def run_variables(
    *, organization_id: int, workflow_id: int
) -> tuple[dict[str, Any], frozenset[str]]:
    """The values a run of the workflow sees, secrets decrypted, and which names are secret
    (so ops can redact them from messages). Only for ops at run time, inside
    tenant_context(organization_id)."""
    rows = WorkflowVariable.objects.filter(
        Q(workflow__isnull=True) | Q(workflow_id=workflow_id), organization_id=organization_id
    )
    chosen: dict[str, WorkflowVariable] = {}
    for row in rows:
        if row.workflow_id is not None or row.name not in chosen:  # the workflow's own wins
            chosen[row.name] = row
    values = {name: _stored_value(row) for name, row in chosen.items()}
    secret = frozenset(name for name, row in chosen.items() if row.is_secret)
    return values, secret


def variables_for_run(organization_id: int, workflow_id: int) -> dict[str, Any]:
    """name -> value for a run of the workflow: the organization's variables overlaid with the
    workflow's own, secrets decrypted. Only for ops at run time."""
    return run_variables(organization_id=organization_id, workflow_id=workflow_id)[0]
