"""Workflow templates: the built-in gallery (YAML files shipped with the code, in `gallery/`) and
each organization's own (the `WorkflowTemplate` table, row-level secured). Both have one shape
and one API; a template becomes a draft workflow by filling its placeholders.

Placeholders are written `[[ name ]]`, apart from Jinja's `{{ }}`, because they are filled once,
when the workflow is made, while Jinja runs on every run. A string that is exactly one
placeholder becomes the value itself (any JSON: a list of recipients, a number); inside a longer
string the value is inserted as text. Values are inserted verbatim, in one pass: a value is never
scanned for further placeholders."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction

from control_plane.core.errors import ApplicationError, ConflictError, NotFoundError
from control_plane.organizations.models import Organization
from control_plane.users.models import User
from control_plane.workflows import services as workflow_services
from control_plane.workflows.models import Workflow, WorkflowTemplate

GALLERY = Path(__file__).resolve().parent / "gallery"
PLACEHOLDER_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
_PLACEHOLDER = re.compile(r"\[\[\s*(" + PLACEHOLDER_NAME + r")\s*\]\]")
_WHOLE = re.compile(r"^\s*\[\[\s*(" + PLACEHOLDER_NAME + r")\s*\]\]\s*$")
_NAME = re.compile(r"^" + PLACEHOLDER_NAME + r"$")
_SLUG = re.compile(r"^[-a-zA-Z0-9_]{1,60}$")
MAX_PLACEHOLDERS = 50
MAX_CONNECTORS = 20
DEFAULT_CATEGORY = "custom"


@dataclass(frozen=True)
class Template:
    """A template of either kind, as the API shows it."""

    slug: str
    name: str
    category: str
    description: str
    definition: dict[str, Any]
    placeholders: list[dict[str, Any]]
    required_connectors: list[str]
    builtin: bool
    id: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    record: WorkflowTemplate | None = field(default=None, compare=False, repr=False)

    @property
    def source(self) -> str:
        return "builtin" if self.builtin else "organization"


# ---------------------------------------------------------------------------------------------
# Placeholders


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def placeholders_used(definition: Any) -> set[str]:
    """Every `[[ name ]]` in the definition's strings."""
    if isinstance(definition, dict):
        return set().union(*(placeholders_used(v) for v in definition.values()))
    if isinstance(definition, list):
        return set().union(*(placeholders_used(v) for v in definition))
    if isinstance(definition, str):
        return set(_PLACEHOLDER.findall(definition))
    return set()


def fill(definition: Any, values: dict[str, Any]) -> Any:
    """The definition with every placeholder named in `values` replaced (a new structure)."""
    if isinstance(definition, dict):
        return {key: fill(item, values) for key, item in definition.items()}
    if isinstance(definition, list):
        return [fill(item, values) for item in definition]
    if not isinstance(definition, str):
        return definition
    whole = _WHOLE.match(definition)
    if whole and whole.group(1) in values:
        return copy.deepcopy(values[whole.group(1)])

    def substitute(match: re.Match) -> str:
        name = match.group(1)
        return _as_text(values[name]) if name in values else match.group(0)

    return _PLACEHOLDER.sub(substitute, definition)


def placeholder_spec_errors(placeholders: Any) -> dict[str, list[str]]:
    """What is wrong with a placeholders list: `[{name, description?, default?}, ...]`."""
    if not isinstance(placeholders, list):
        return {"placeholders": ["must be a list of {name, description, default}"]}
    if len(placeholders) > MAX_PLACEHOLDERS:
        return {"placeholders": [f"at most {MAX_PLACEHOLDERS} placeholders"]}
    errors: dict[str, list[str]] = {}
    seen: set[str] = set()
    for index, item in enumerate(placeholders):
        where = f"placeholders[{index}]"
        if not isinstance(item, dict):
            errors[where] = ["must be an object with name, description and default"]
            continue
        for key in sorted(set(item) - {"name", "description", "default"}):
            errors[f"{where}.{key}"] = ["unknown field (expected name, description, default)"]
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            errors[f"{where}.name"] = ["must be an identifier (letters, digits, _)"]
        elif name in seen:
            errors[f"{where}.name"] = [f"duplicate placeholder '{name}'"]
        else:
            seen.add(name)
        description = item.get("description", "")
        if not isinstance(description, str) or len(description) > 500:
            errors[f"{where}.description"] = ["must be a string of at most 500 characters"]
    return errors


def _normalized_placeholders(placeholders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    result = []
    for item in placeholders:
        spec = {"name": item["name"], "description": item.get("description", "")}
        if item.get("default") is not None:
            spec["default"] = item["default"]
        result.append(spec)
    return result


def resolve_values(template: Template, values: Any) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Placeholder values with defaults applied, and errors keyed `values.<name>`: unknown names,
    required placeholders left out, and values whose JSON type differs from the default's."""
    if not isinstance(values, dict):
        return {}, {"values": ["must be an object of placeholder values"]}
    declared = {spec["name"]: spec for spec in template.placeholders}
    errors: dict[str, list[str]] = {}
    for name in values:
        if name not in declared:
            expected = ", ".join(declared) or "none"
            errors[f"values.{name}"] = [f"unknown placeholder (expected one of: {expected})"]
    resolved: dict[str, Any] = {}
    for name, spec in declared.items():
        value, default = values.get(name), spec.get("default")
        if value is None:
            if default is None:
                errors[f"values.{name}"] = ["this placeholder is required"]
                continue
            value = default
        elif default is not None and _json_type(value) != _json_type(default):
            errors[f"values.{name}"] = [
                f"expected {_json_type(default)} (like the default), got {_json_type(value)}"
            ]
            continue
        resolved[name] = value
    return resolved, errors


# ---------------------------------------------------------------------------------------------
# The built-in gallery


def _template_fields_errors(document: dict[str, Any]) -> dict[str, list[str]]:
    """Shape errors shared by gallery files and organization templates."""
    errors: dict[str, list[str]] = {}
    slug = document.get("slug")
    if not isinstance(slug, str) or not _SLUG.match(slug):
        errors["slug"] = ["must be a slug (letters, digits, - and _; at most 60)"]
    for key, limit in (("name", 200), ("category", 60)):
        value = document.get(key)
        if not isinstance(value, str) or not value.strip() or len(value) > limit:
            errors[key] = [f"must be a non-empty string of at most {limit} characters"]
    if not isinstance(document.get("description", ""), str):
        errors["description"] = ["must be a string"]
    if not isinstance(document.get("definition"), dict):
        errors["definition"] = ["must be a JSON object (a workflow definition)"]
    errors.update(placeholder_spec_errors(document.get("placeholders", [])))
    connectors = document.get("required_connectors", [])
    if (
        not isinstance(connectors, list)
        or len(connectors) > MAX_CONNECTORS
        or not all(isinstance(c, str) and 0 < len(c) <= 60 for c in connectors)
    ):
        errors["required_connectors"] = [
            f"must be a list of at most {MAX_CONNECTORS} connector names"
        ]
    if "definition" not in errors and "placeholders" not in errors:
        declared = {p.get("name") for p in document.get("placeholders", []) if isinstance(p, dict)}
        undeclared = sorted(placeholders_used(document["definition"]) - declared)
        if undeclared:
            names = ", ".join(f"[[ {name} ]]" for name in undeclared)
            errors["definition"] = [f"uses placeholders not declared in placeholders: {names}"]
    return errors


@cache
def builtin_templates() -> dict[str, Template]:
    """The gallery, read once per process. A broken file is a bug in the release: fail loudly."""
    import yaml

    templates: dict[str, Template] = {}
    for path in sorted(GALLERY.glob("*.yaml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(document, dict):
            raise ValueError(f"{path.name}: a template file is a mapping")
        unknown = set(document) - {
            "slug",
            "name",
            "category",
            "description",
            "placeholders",
            "required_connectors",
            "definition",
        }
        errors = _template_fields_errors(document)
        if unknown or errors:
            raise ValueError(f"{path.name}: unknown keys {sorted(unknown)}, errors {errors}")
        if document["slug"] in templates:
            raise ValueError(f"{path.name}: slug '{document['slug']}' is used twice")
        templates[document["slug"]] = Template(
            slug=document["slug"],
            name=document["name"],
            category=document["category"],
            description=document.get("description", "").strip(),
            definition=document["definition"],
            placeholders=_normalized_placeholders(document.get("placeholders", [])),
            required_connectors=list(document.get("required_connectors", [])),
            builtin=True,
        )
    return templates


# ---------------------------------------------------------------------------------------------
# Selectors


def _from_record(record: WorkflowTemplate) -> Template:
    return Template(
        slug=record.slug,
        name=record.name,
        category=record.category,
        description=record.description,
        definition=record.definition,
        placeholders=list(record.placeholders or []),
        required_connectors=list(record.required_connectors or []),
        builtin=False,
        id=record.pk,
        created_at=record.created_at,
        updated_at=record.updated_at,
        record=record,
    )


def _matches(template: Template, words: list[str]) -> bool:
    text = " ".join(
        (template.slug, template.name, template.description, template.category)
    ).casefold()
    return all(word in text for word in words)


def template_list(
    *,
    organization: Organization,
    category: str | None = None,
    search: str | None = None,
    source: str | None = None,
) -> list[Template]:
    """The gallery and the organization's own templates, by category then name. An organization
    template shadows a built-in of the same slug (one added to the gallery after it was made)."""
    own = {
        record.slug: _from_record(record)
        for record in WorkflowTemplate.objects.filter(organization=organization)
    }
    merged = {**builtin_templates(), **own}
    templates = list(merged.values())
    if source:
        templates = [t for t in templates if t.source == source]
    if category:
        templates = [t for t in templates if t.category.casefold() == category.casefold()]
    words = (search or "").casefold().split()
    if words:
        templates = [t for t in templates if _matches(t, words)]
    return sorted(templates, key=lambda t: (t.category.casefold(), t.name.casefold(), t.slug))


def template_get(*, organization: Organization, slug: str) -> Template:
    """By slug: the organization's own first, then the gallery. Another organization's template
    is not found (the manager and row-level security both scope the query)."""
    record = WorkflowTemplate.objects.filter(organization=organization, slug=slug).first()
    if record is not None:
        return _from_record(record)
    builtin = builtin_templates().get(slug)
    if builtin is None:
        raise NotFoundError("template not found")
    return builtin


def template_preview(*, template: Template, values: Any) -> dict[str, Any]:
    """The definition with the placeholders filled, and every problem with it: value errors
    (`values.<name>`) and validation errors of the filled definition. Nothing is saved."""
    resolved, value_errors = resolve_values(template, values)
    definition = fill(template.definition, resolved)
    errors = [
        {"path": path, "message": message}
        for path, messages in value_errors.items()
        for message in messages
    ]
    errors += workflow_services.definition_errors(definition)
    return {"valid": not errors, "values": resolved, "definition": definition, "errors": errors}


# ---------------------------------------------------------------------------------------------
# Services


def template_instantiate(
    *,
    organization: Organization,
    user: User | None,
    slug: str,
    values: Any,
    name: str,
    workflow_slug: str | None = None,
) -> Workflow:
    """A new draft workflow from a template. Bad placeholder values are refused here (each
    named `values.<name>`); the draft itself may have problems, which the workflow shows, as
    any draft may."""
    template = template_get(organization=organization, slug=slug)
    resolved, errors = resolve_values(template, values if values is not None else {})
    if errors:
        first, messages = next(iter(errors.items()))
        raise ApplicationError(
            f"{first}: {messages[0]}", code="invalid_template_values", fields=errors
        )
    return workflow_services.workflow_create(
        organization=organization,
        created_by=user,
        name=name,
        slug=workflow_slug or "",
        description=template.description,
        definition=fill(template.definition, resolved),
    )


def _raise_if_invalid(document: dict[str, Any]) -> None:
    errors = _template_fields_errors(document)
    if errors:
        first, messages = next(iter(errors.items()))
        raise ApplicationError(f"{first}: {messages[0]}", code="invalid_template", fields=errors)


def _refuse_builtin_slug(slug: str) -> None:
    if slug in builtin_templates():
        raise ConflictError(
            f"'{slug}' is the slug of a built-in template: choose another",
            code="slug_taken",
            fields={"slug": ["used by a built-in template"]},
        )


def _save(record: WorkflowTemplate) -> None:
    try:
        record.full_clean(exclude=["organization", "created_by"], validate_unique=False)
    except DjangoValidationError as exc:
        fields = {key: [str(m) for m in messages] for key, messages in exc.message_dict.items()}
        first, messages = next(iter(fields.items()))
        raise ApplicationError(
            f"{first}: {messages[0]}", code="invalid_template", fields=fields
        ) from None
    try:
        with transaction.atomic():
            record.save()
    except IntegrityError as exc:
        raise ConflictError(
            f"a template with slug '{record.slug}' exists",
            code="slug_taken",
            fields={"slug": ["already taken"]},
        ) from exc


@transaction.atomic
def template_create(
    *,
    organization: Organization,
    created_by: User | None,
    slug: str,
    name: str,
    definition: Any,
    category: str = DEFAULT_CATEGORY,
    description: str = "",
    placeholders: Any = None,
    required_connectors: Any = None,
) -> WorkflowTemplate:
    document = {
        "slug": slug,
        "name": name,
        "category": category or DEFAULT_CATEGORY,
        "description": description,
        "definition": definition,
        "placeholders": placeholders if placeholders is not None else [],
        "required_connectors": required_connectors if required_connectors is not None else [],
    }
    _raise_if_invalid(document)
    _refuse_builtin_slug(slug)
    document["placeholders"] = _normalized_placeholders(document["placeholders"])
    record = WorkflowTemplate(organization=organization, created_by=created_by, **document)
    _save(record)
    return record


EDITABLE = {
    "name",
    "category",
    "description",
    "definition",
    "placeholders",
    "required_connectors",
}


def _own_record(template: Template) -> WorkflowTemplate:
    if template.builtin or template.record is None:
        raise ConflictError(
            f"'{template.slug}' is a built-in template: it cannot be changed or deleted "
            "(create a workflow from it, or a template of your own)",
            code="builtin_template",
        )
    return template.record


@transaction.atomic
def template_update(*, template: Template, **changes: Any) -> WorkflowTemplate:
    record = _own_record(template)
    for key in changes:
        if key not in EDITABLE:
            raise ApplicationError(f"'{key}' cannot be changed", fields={key: ["read-only"]})
    document = {
        "slug": record.slug,
        **{key: getattr(record, key) for key in EDITABLE},
        **changes,
    }
    _raise_if_invalid(document)
    document["placeholders"] = _normalized_placeholders(document["placeholders"])
    for key in EDITABLE:
        setattr(record, key, document[key])
    _save(record)
    return record


@transaction.atomic
def template_delete(*, template: Template) -> None:
    _own_record(template).delete()
