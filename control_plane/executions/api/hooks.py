"""The webhook receiver: `POST /hooks/<token>`, outside the API and its authentication (the
secret URL, and its HMAC signature when the trigger has a signing secret, are the credentials).

A request finds its trigger with one indexed system query (the token's SHA-256); everything
after that runs in the trigger's organization under row-level security. The 202 is built only
after the TriggerEvent committed, so an acknowledged event is never lost."""

from __future__ import annotations

import base64
import json
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from control_plane.core.errors import ApplicationError, NotFoundError
from control_plane.core.tenancy import tenant_context
from control_plane.executions.models import TriggerEvent
from control_plane.executions.services import workflow_run
from control_plane.workflows.models import Workflow, WorkflowTrigger
from control_plane.workflows.triggers import (
    SIGNATURE_HEADER,
    trigger_for_webhook_token,
    webhook_signature_valid,
)

MAX_BODY_BYTES = 1024 * 1024


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = f"The body is larger than {MAX_BODY_BYTES} bytes."
    default_code = "payload_too_large"


class RawBodyParser(BaseParser):
    """Any content type, as bytes (the signature covers the body exactly as sent), read no
    further than the size limit."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None) -> bytes:
        body = stream.read(MAX_BODY_BYTES + 1) if stream is not None else b""
        if len(body) > MAX_BODY_BYTES:
            raise PayloadTooLarge()
        return body


def _storable(value: Any) -> bool:
    """Whether PostgreSQL's jsonb takes it: no NUL and no lone surrogate in any string."""
    if isinstance(value, str):
        if "\x00" in value:
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_storable(k) and _storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_storable(item) for item in value)
    return True


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def webhook_payload(body: bytes, content_type: str) -> tuple[dict[str, Any], bool]:
    """What the TriggerEvent stores, and whether it is the JSON object sent (only that can
    carry `inputs`): any other JSON value, or another content type, is stored as
    `{"body": ..., "content_type": ...}` (bytes that are not text as `body_base64`).
    Malformed JSON is a 400."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        if not body.strip():
            return {}, True
        try:
            value = json.loads(body, parse_constant=_no_constants)
        except (ValueError, RecursionError) as exc:
            raise ParseError(f"JSON parse error: {str(exc)[:200]}") from None
        if not _storable(value):
            raise ParseError("JSON strings may not contain NUL characters or lone surrogates.")
        if isinstance(value, dict):
            return value, True
        return {"body": value, "content_type": media_type}, False
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        encoded = base64.b64encode(body).decode("ascii")
        return {"body_base64": encoded, "content_type": media_type}, False
    return {"body": text, "content_type": media_type}, False


def _not_found() -> NotFoundError:
    # One answer for an unknown token, a disabled trigger and a workflow not running: the
    # caller learns nothing about which.
    return NotFoundError("No webhook at this address.")


def _runnable(trigger: WorkflowTrigger | None) -> bool:
    return (
        trigger is not None
        and trigger.kind == WorkflowTrigger.Kind.WEBHOOK
        and trigger.enabled
        and trigger.workflow.status == Workflow.Status.ACTIVE
    )


def _content_length(request) -> int | None:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None


class WebhookReceiveApi(APIView):
    """Start a workflow from a webhook; answers 202 with the committed event."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    # Its 202 promises a committed event: no outer request transaction may hold the commit.
    own_transaction = True
    parser_classes = [RawBodyParser]

    @extend_schema(request=bytes, responses={202: dict})
    def post(self, request, token: str):
        if (_content_length(request) or 0) > MAX_BODY_BYTES:
            raise PayloadTooLarge()
        found = trigger_for_webhook_token(token)
        if not _runnable(found):
            raise _not_found()
        body = request.data if isinstance(request.data, bytes) else b""
        if found.signing_secret and not webhook_signature_valid(
            found, body, request.headers.get(SIGNATURE_HEADER, "")
        ):
            raise ApplicationError(
                f"missing or invalid {SIGNATURE_HEADER} header",
                code="invalid_signature",
                status_code=status.HTTP_401_UNAUTHORIZED,
            )
        payload, is_object = webhook_payload(body, request.content_type or "")
        inputs = payload.get("inputs", {}) if is_object else {}
        with tenant_context(found.organization_id):
            # Read again on this connection, under row security and in this transaction (the
            # lookup used the system alias); it may have been disabled in between.
            trigger = (
                WorkflowTrigger.objects.select_related("workflow__organization")
                .filter(pk=found.pk)
                .first()
            )
            if not _runnable(trigger):
                raise _not_found()
            execution = workflow_run(
                workflow=trigger.workflow,
                inputs=inputs,
                kind=TriggerEvent.Kind.WEBHOOK,
                payload=payload,
                trigger=trigger,
            )
            event_id = execution.trigger_event.pk
        # Committed: only now is the event acknowledged.
        return Response(
            {"event_id": event_id, "execution_id": execution.pk, "status": execution.status},
            status=status.HTTP_202_ACCEPTED,
        )
