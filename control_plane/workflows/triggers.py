"""Workflow triggers: what starts a workflow besides a person pressing "run".

- **manual**: a saved set of inputs, started from the UI or the API;
- **schedule**: a 5-field cron expression in an IANA time zone (rendered as a Dagster
  `ScheduleDefinition`);
- **webhook**: a secret URL (`{FLOWPILOT_WEB_URL}/hooks/{token}`); the database keeps the token
  encrypted (editors may see the URL again) and its SHA-256 (how a request finds the trigger).
  With a signing secret, a request must carry `X-FlowPilot-Signature: sha256=<hex>`, the
  HMAC-SHA256 of its body, as GitHub does;
- **event**: one of the named control-plane events in `EVENT_TYPES`.

Services and selectors here; callers act inside `tenant_context` (the API middleware opens it),
except `trigger_for_webhook_token`, a system lookup across organizations."""

from __future__ import annotations

import hashlib
import hmac
import zoneinfo
from functools import cache
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from pydantic import ValidationError as PydanticValidationError

from control_plane.core import dagster
from control_plane.core.errors import ApplicationError
from control_plane.core.tenancy import system_database
from control_plane.users.models import User
from control_plane.users.tokens import new_secret, sha256
from control_plane.workflows.models import Workflow, WorkflowTrigger
from orchestration.steps.definition import InputSpec, WorkflowDefinition, coerce_inputs

Kind = WorkflowTrigger.Kind

# The named control-plane events an event trigger can listen to, with what each means. The
# emitting side (next to the thing that happened) sends the event's payload as the run's
# `trigger` data; a trigger's own `inputs` are merged under it.
EVENT_TYPES: dict[str, str] = {
    "document.uploaded": "A document was uploaded to the organization's document store.",
    "document.processed": "A document's text was extracted and indexed.",
    "email.received": "An email arrived in a connected mailbox.",
    "slack.message": "A message was posted in a connected Slack channel.",
    "workflow.succeeded": "Another workflow of the organization finished successfully.",
    "workflow.failed": "Another workflow of the organization failed.",
}

DEFAULT_TIMEZONE = "UTC"
SIGNATURE_HEADER = "X-FlowPilot-Signature"
SIGNATURE_PREFIX = "sha256="

# The fields only one kind of trigger has: a value for another kind is refused, not stored.
KIND_FIELDS: dict[str, frozenset[str]] = {
    Kind.MANUAL: frozenset(),
    Kind.SCHEDULE: frozenset({"cron", "timezone"}),
    Kind.WEBHOOK: frozenset({"signing"}),
    Kind.EVENT: frozenset({"event_type"}),
}
EDITABLE = frozenset({"name", "enabled", "inputs", "cron", "timezone", "event_type"})


class TriggerError(ApplicationError):
    code = "invalid_trigger"


def _raise_if(errors: dict[str, list[str]]) -> None:
    if errors:
        field, messages = next(iter(errors.items()))
        raise TriggerError(f"{field}: {messages[0]}", fields=errors)


# -- validation ----------------------------------------------------------------------------------


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def cron_error(cron: Any) -> str | None:
    """Why `cron` is not a schedule Dagster runs (5 fields, minute resolution), or None."""
    from dagster._utils.schedules import is_valid_cron_string

    if not isinstance(cron, str) or not cron.strip():
        return "required for a schedule trigger"
    if len(cron.split()) != 5:
        return "expected 5 fields: minute hour day-of-month month day-of-week"
    if not is_valid_cron_string(cron):
        return f"'{cron}' is not a valid cron expression"
    return None


def timezone_error(name: Any) -> str | None:
    if not isinstance(name, str) or name not in _time_zones():
        return f"'{name}' is not an IANA time zone (such as 'Europe/Berlin' or 'UTC')"
    return None


def event_type_error(event_type: Any) -> str | None:
    if not event_type:
        return "required for an event trigger"
    if event_type not in EVENT_TYPES:
        return f"unknown event type (expected one of: {', '.join(EVENT_TYPES)})"
    return None


def _declared_inputs(workflow: Workflow) -> dict[str, InputSpec | None] | None:
    """The inputs the workflow declares, in its latest version or its draft (a trigger may be
    made for inputs about to be published). None when it has no definition yet: then nothing
    can be checked. A spec that does not parse (drafts may be incomplete) declares the name
    only; the published spec wins over the draft's, since that is what runs."""
    latest = workflow.versions.order_by("-number").first()
    raw_definitions = [workflow.draft_definition] + ([latest.definition] if latest else [])
    raw_definitions = [raw for raw in raw_definitions if isinstance(raw, dict) and raw]
    if not raw_definitions:
        return None
    declared: dict[str, InputSpec | None] = {}
    for raw in raw_definitions:  # draft first, so the published version overrides
        inputs = raw.get("inputs")
        if not isinstance(inputs, dict):
            continue
        for name, spec in inputs.items():
            try:
                declared[name] = InputSpec.model_validate(spec)
            except PydanticValidationError:
                declared.setdefault(name, None)
    return declared


def inputs_errors(workflow: Workflow, inputs: Any) -> dict[str, list[str]]:
    """A trigger's inputs: an object naming only declared inputs, each of its declared type.
    Missing required inputs are not an error: a webhook or event may bring them."""
    if not isinstance(inputs, dict):
        return {"inputs": ["expected an object"]}
    declared = _declared_inputs(workflow)
    if declared is None:
        return {}
    errors: dict[str, list[str]] = {}
    for name, value in inputs.items():
        if name not in declared:
            expected = ", ".join(declared) or "none"
            errors[f"inputs.{name}"] = [f"unknown input (expected one of: {expected})"]
        elif declared[name] is not None and value is not None:
            spec = WorkflowDefinition.model_construct(inputs={name: declared[name]})
            _, problems = coerce_inputs(spec, {name: value})
            if name in problems:
                errors[f"inputs.{name}"] = problems[name]
    return errors


def _foreign_fields_errors(kind: str, values: dict[str, Any]) -> dict[str, list[str]]:
    """Values for fields another kind of trigger has. Empty values ("", None, false) are what
    a form sends for fields it does not show, so they pass."""
    own = KIND_FIELDS[kind]
    return {
        field: [f"not a field of {kind} triggers"]
        for field, value in values.items()
        if field not in own and value not in (None, "", False)
    }


def _other_kinds_fields(kind: str) -> frozenset[str]:
    return frozenset().union(*KIND_FIELDS.values()) - KIND_FIELDS[kind]


# -- services ------------------------------------------------------------------------------------


def _new_webhook_token(trigger: WorkflowTrigger) -> None:
    token = new_secret(32)
    trigger.webhook_token = token
    trigger.webhook_token_hash = sha256(token)


@transaction.atomic
def trigger_create(
    *,
    workflow: Workflow,
    created_by: User | None,
    kind: str,
    name: str = "",
    enabled: bool = True,
    inputs: Any = None,
    cron: str | None = None,
    timezone: str | None = None,
    event_type: str | None = None,
    signing: bool = False,
) -> WorkflowTrigger:
    """A trigger of one kind, validated field by field (every error names its field). A
    webhook gets its URL token here, and a signing secret when `signing` is set; the caller
    shows that secret once (it stays readable only to the receiving side)."""
    if kind not in KIND_FIELDS:
        raise TriggerError(
            f"kind: unknown trigger kind '{kind}'",
            fields={"kind": [f"expected one of: {', '.join(KIND_FIELDS)}"]},
        )
    inputs = {} if inputs is None else inputs
    errors = _foreign_fields_errors(
        kind, {"cron": cron, "timezone": timezone, "event_type": event_type, "signing": signing}
    )
    trigger = WorkflowTrigger(
        organization_id=workflow.organization_id,
        workflow=workflow,
        kind=kind,
        name=name,
        enabled=enabled,
        inputs=inputs,
        created_by=created_by,
    )
    if kind == Kind.SCHEDULE:
        trigger.cron = cron.strip() if isinstance(cron, str) else ""
        trigger.timezone = timezone or DEFAULT_TIMEZONE
        if problem := cron_error(cron):
            errors["cron"] = [problem]
        if problem := timezone_error(trigger.timezone):
            errors["timezone"] = [problem]
    elif kind == Kind.EVENT:
        trigger.event_type = event_type or ""
        if problem := event_type_error(event_type):
            errors["event_type"] = [problem]
    elif kind == Kind.WEBHOOK:
        _new_webhook_token(trigger)
        if signing:
            trigger.signing_secret = new_secret(32)
    errors.update(inputs_errors(workflow, inputs))
    _raise_if(errors)
    trigger.full_clean(exclude=["organization", "workflow", "created_by"])
    trigger.save()
    _reload_if_scheduled(trigger)
    return trigger


@transaction.atomic
def trigger_update(*, trigger: WorkflowTrigger, **changes: Any) -> WorkflowTrigger:
    """Change what a trigger does (its kind and webhook secrets stay: see the rotations). A
    field another kind has is refused; an empty time zone goes back to UTC."""
    errors = {field: ["cannot be changed"] for field in changes if field not in EDITABLE}
    foreign = {k: v for k, v in changes.items() if k in _other_kinds_fields(trigger.kind)}
    errors.update(_foreign_fields_errors(trigger.kind, foreign))
    if trigger.kind == Kind.SCHEDULE:
        if "cron" in changes:
            changes["cron"] = changes["cron"].strip() if isinstance(changes["cron"], str) else ""
            if problem := cron_error(changes["cron"]):
                errors["cron"] = [problem]
        if "timezone" in changes:
            changes["timezone"] = changes["timezone"] or DEFAULT_TIMEZONE
            if problem := timezone_error(changes["timezone"]):
                errors["timezone"] = [problem]
    if trigger.kind == Kind.EVENT and "event_type" in changes:
        if problem := event_type_error(changes["event_type"]):
            errors["event_type"] = [problem]
    if "inputs" in changes:
        if changes["inputs"] is None:
            changes["inputs"] = {}
        errors.update(inputs_errors(trigger.workflow, changes["inputs"]))
    _raise_if(errors)
    # Empty values for another kind's fields passed validation; they are not stored.
    changes = {k: v for k, v in changes.items() if k not in foreign}
    for field, value in changes.items():
        setattr(trigger, field, value)
    trigger.full_clean(exclude=["organization", "workflow", "created_by"])
    trigger.save(update_fields=[*changes, "updated_at"])
    _reload_if_scheduled(trigger)
    return trigger


@transaction.atomic
def trigger_delete(*, trigger: WorkflowTrigger) -> None:
    _reload_if_scheduled(trigger)
    trigger.delete()


def _reload_if_scheduled(trigger: WorkflowTrigger) -> None:
    """Schedules are Dagster definitions: a change reaches the daemon through a code location
    reload once the change is committed."""
    if trigger.kind == Kind.SCHEDULE:
        dagster.reload_on_commit(trigger.organization_id)


def _webhook_only(trigger: WorkflowTrigger, what: str) -> None:
    if trigger.kind != Kind.WEBHOOK:
        raise TriggerError(
            f"what: only webhook triggers have a {what}",
            fields={"what": [f"a {trigger.kind} trigger has no {what}"]},
        )


@transaction.atomic
def webhook_rotate(*, trigger: WorkflowTrigger) -> WorkflowTrigger:
    """A new URL: the old token stops matching as soon as this commits (a leaked URL is
    revoked by rotating it)."""
    _webhook_only(trigger, "URL")
    _new_webhook_token(trigger)
    trigger.save(update_fields=["webhook_token", "webhook_token_hash", "updated_at"])
    return trigger


@transaction.atomic
def signing_secret_rotate(*, trigger: WorkflowTrigger) -> WorkflowTrigger:
    """A new HMAC secret (signing starts if the webhook had none); the caller shows it once.
    Senders signing with the old secret are refused from then on."""
    _webhook_only(trigger, "signing secret")
    trigger.signing_secret = new_secret(32)
    trigger.save(update_fields=["signing_secret", "updated_at"])
    return trigger


# -- selectors -----------------------------------------------------------------------------------


def trigger_list(
    *, workflow: Workflow, kind: str | None = None, enabled: bool | None = None
) -> QuerySet[WorkflowTrigger]:
    qs = WorkflowTrigger.objects.filter(workflow=workflow).order_by("-created_at", "-id")
    if kind:
        qs = qs.filter(kind=kind)
    if enabled is not None:
        qs = qs.filter(enabled=enabled)
    return qs


def trigger_get(*, workflow: Workflow, trigger_id: int) -> WorkflowTrigger | None:
    """The workflow's trigger with that id; None for another workflow's (or tenant's)."""
    return trigger_list(workflow=workflow).filter(pk=trigger_id).first()


def trigger_for_webhook_token(token: str) -> WorkflowTrigger | None:
    """The webhook trigger a URL token belongs to, in any organization (a system lookup: the
    request carries no organization). Disabled triggers are returned too, so the caller can
    tell "disabled" from "unknown"."""
    if not token or not isinstance(token, str):
        return None
    trigger = (
        WorkflowTrigger.objects.unscoped()
        .using(system_database())
        .select_related("workflow", "organization")
        .filter(kind=Kind.WEBHOOK, webhook_token_hash=sha256(token))
        .first()
    )
    if trigger is None or not hmac.compare_digest(trigger.webhook_token, token):
        return None
    return trigger


def webhook_url(trigger: WorkflowTrigger) -> str | None:
    if trigger.kind != Kind.WEBHOOK or not trigger.webhook_token:
        return None
    return f"{settings.FLOWPILOT_WEB_URL}/hooks/{trigger.webhook_token}"


def webhook_signature(secret: str, body: bytes) -> str:
    """The header value a sender puts in `X-FlowPilot-Signature`."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_PREFIX}{digest}"


def webhook_signature_valid(trigger: WorkflowTrigger, body: bytes, signature_header: str) -> bool:
    """Whether `signature_header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under the
    trigger's signing secret. Compared in constant time; a trigger without a secret, or a
    missing or malformed header, is never valid (the caller decides whether unsigned
    webhooks need a signature at all)."""
    if not trigger.signing_secret or not isinstance(signature_header, str):
        return False
    if not signature_header.startswith(SIGNATURE_PREFIX):
        return False
    expected = webhook_signature(trigger.signing_secret, body)
    return hmac.compare_digest(expected.encode(), signature_header.strip().encode())
