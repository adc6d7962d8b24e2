"""Connector writes. Credentials are checked against their kind (the keys it needs, each named
in errors), stored encrypted as JSON text, and never read back by the API."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from django.db import IntegrityError, transaction

from control_plane.connectors.models import Connector
from control_plane.connectors.selectors import workflows_using
from control_plane.core.errors import ApplicationError, ConflictError
from control_plane.organizations.models import Organization
from control_plane.users.models import User

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
MAX_CREDENTIAL_CHARS = 4096
Kind = Connector.Kind
_UPDATABLE = {"name", "description", "credentials"}


def _slack_token(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "required: the Slack app's bot token (xoxb-...)"
    if not value.startswith("xox") or any(c.isspace() for c in value):
        return "a Slack token starts with 'xox' (a bot token: xoxb-...) and has no spaces"
    return None


# Per kind: credential key -> check (an error message, or None when the value is fine).
CREDENTIAL_FIELDS: dict[str, dict[str, Callable[[Any], str | None]]] = {
    Kind.SLACK: {"bot_token": _slack_token},
}


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ApplicationError(
            f"invalid connector name {name!r}: use lowercase letters, digits, - and _, starting "
            "with a letter or digit, at most 63 characters (steps name it as config.connector)",
            fields={"name": ["must match ^[a-z0-9][a-z0-9_-]{0,62}$"]},
        )


def _encode_credentials(kind: str, credentials: Any) -> str:
    """The credentials as JSON text, after checking every key the kind needs is there and valid
    and no other key is. Messages name the keys, never the values."""
    fields = CREDENTIAL_FIELDS.get(kind)
    if fields is None:
        raise ApplicationError(
            f"unknown connector kind {kind!r}", fields={"kind": [f"one of: {', '.join(Kind)}"]}
        )
    if not isinstance(credentials, dict):
        message = f"must be an object with: {', '.join(fields)}"
        raise ApplicationError(f"credentials: {message}", fields={"credentials": [message]})
    errors: dict[str, list[str]] = {}
    for key, check in fields.items():
        problem = check(credentials.get(key))
        if problem:
            errors[f"credentials.{key}"] = [problem]
    for key in credentials:
        if key not in fields:
            errors[f"credentials.{key}"] = [
                f"unknown key for a {kind} connector (known: {', '.join(fields)})"
            ]
    text = json.dumps(credentials, ensure_ascii=False)
    if not errors and len(text) > MAX_CREDENTIAL_CHARS:
        errors["credentials"] = [f"over {MAX_CREDENTIAL_CHARS} characters as JSON"]
    if errors:
        first = next(iter(errors))
        raise ApplicationError(f"{first}: {errors[first][0]}", fields=errors)
    return text


def _save(connector: Connector) -> None:
    try:
        with transaction.atomic():
            connector.save()
    except IntegrityError as exc:
        raise ConflictError(
            f"the organization already has a connector named '{connector.name}'",
            fields={"name": ["already taken"]},
        ) from exc


def _refuse_if_used(connector: Connector, doing: str) -> None:
    """Published versions name connectors: removing or renaming one would break their runs."""
    using = workflows_using(name=connector.name)
    if using:
        names = ", ".join(f"'{w.name}'" for w in using)
        raise ConflictError(
            f"cannot {doing} connector '{connector.name}': the latest published version of "
            f"{names} uses it; publish versions without it first",
            code="connector_in_use",
            details=[{"workflow_id": w.pk, "slug": w.slug, "name": w.name} for w in using],
        )


@transaction.atomic
def connector_create(
    *,
    organization: Organization,
    created_by: User | None,
    name: str,
    kind: str,
    credentials: Any,
    description: str = "",
) -> Connector:
    _check_name(name)
    connector = Connector(
        organization=organization,
        name=name,
        kind=kind,
        description=description,
        credentials=_encode_credentials(kind, credentials),
        created_by=created_by,
    )
    _save(connector)
    return connector


@transaction.atomic
def connector_update(*, connector: Connector, **changes: Any) -> Connector:
    """Change name, description or credentials (replaced whole: they cannot be read back to
    merge). The kind is fixed: steps were validated against it."""
    for field in changes:
        if field not in _UPDATABLE:
            raise ApplicationError(f"'{field}' cannot be changed", fields={field: ["read-only"]})
    if "name" in changes and changes["name"] != connector.name:
        _check_name(changes["name"])
        _refuse_if_used(connector, "rename")
        connector.name = changes["name"]
    if "description" in changes:
        connector.description = changes["description"]
    if "credentials" in changes:
        connector.credentials = _encode_credentials(connector.kind, changes["credentials"])
    _save(connector)
    return connector


@transaction.atomic
def connector_delete(*, connector: Connector) -> None:
    _refuse_if_used(connector, "delete")
    connector.delete()


def credential_markers(connector: Connector) -> dict[str, str]:
    """What the API shows of the credentials: the keys, each "set" (services store only
    complete credentials, so nothing is decrypted to say so)."""
    return dict.fromkeys(CREDENTIAL_FIELDS.get(connector.kind, {}), "set")
