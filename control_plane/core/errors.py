"""One JSON error shape for every API response that is not a success:

{"error": {"code": "...", "message": "...", "fields": {"field": ["message"]},
           "details": [...], "request_id": "..."}}
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response

from control_plane.core.logging import current_request_id

log = logging.getLogger(__name__)


class ApplicationError(Exception):
    """A business-rule failure a service raises; the API turns it into the error shape."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "invalid"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        fields: dict[str, list[str]] | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.status_code = status_code or self.status_code
        self.fields = fields or {}
        self.details = details or []
        self.headers = headers or {}


class NotFoundError(ApplicationError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class ConflictError(ApplicationError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


def error_body(
    code: str,
    message: str,
    fields: dict[str, list[str]] | None = None,
    details: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    if details:
        error["details"] = details
    error["request_id"] = current_request_id()
    return {"error": error}


def _flatten(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error detail -> {"a.b[0].c": ["message", ...]}."""
    out: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif (
        isinstance(detail, list) and detail and all(not isinstance(d, dict | list) for d in detail)
    ):
        out[prefix or "non_field_errors"] = [str(d) for d in detail]
    elif isinstance(detail, list):
        for index, value in enumerate(detail):
            out.update(_flatten(value, f"{prefix}[{index}]"))
    else:
        out[prefix or "non_field_errors"] = [str(detail)]
    return out


_CODES = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
    exceptions.ParseError: "parse_error",
}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    if isinstance(exc, ApplicationError):
        body = error_body(exc.code, exc.message, exc.fields, exc.details)
        return Response(body, status=exc.status_code, headers=exc.headers)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )

    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten(exc.detail)
        first = next(iter(fields.items()), ("", ["invalid input"]))
        message = f"{first[0]}: {first[1][0]}" if first[0] != "non_field_errors" else first[1][0]
        return Response(error_body("validation_error", message, fields), status=400)
    if isinstance(exc, exceptions.APIException):
        headers = {}
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            # DRF sends 403 when no authenticator offers a challenge header; 401 is correct.
            exc.status_code = status.HTTP_401_UNAUTHORIZED
            headers["WWW-Authenticate"] = 'Bearer realm="api"'
        code = _CODES.get(type(exc), getattr(exc, "default_code", "error"))
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return Response(error_body(code, detail), status=exc.status_code, headers=headers)

    if isinstance(exc, OperationalError | InterfaceError):
        log.warning("database unavailable in %s: %s", context.get("view").__class__.__name__, exc)
        body, status_code, headers = _unavailable()
        return Response(body, status=status_code, headers=headers)
    log.exception("unhandled error in %s", context.get("view").__class__.__name__)
    return Response(error_body("server_error", "Internal server error."), status=500)


def _unavailable() -> tuple[dict, int, dict[str, str]]:
    """The database refused or dropped the connection (overload, restart): nothing was done,
    and the client may retry shortly."""
    body = error_body("unavailable", "The service is busy; nothing was done. Retry shortly.")
    return body, 503, {"Retry-After": "1"}


def json_404(request, exception=None) -> JsonResponse:
    return JsonResponse(error_body("not_found", "Not found."), status=404)


def json_500(request) -> JsonResponse:
    # Django calls this while handling the exception (also one raised in a middleware).
    if isinstance(sys.exc_info()[1], OperationalError | InterfaceError):
        body, status_code, headers = _unavailable()
        return JsonResponse(body, status=status_code, headers=headers)
    return JsonResponse(error_body("server_error", "Internal server error."), status=500)


def json_400(request, exception=None) -> JsonResponse:
    return JsonResponse(error_body("bad_request", "Bad request."), status=400)


def json_403(request, exception=None) -> JsonResponse:
    return JsonResponse(error_body("permission_denied", "Forbidden."), status=403)
