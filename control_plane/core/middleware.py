from __future__ import annotations

import logging
import re
import time
import uuid

from control_plane.core.logging import reset_request_id, set_request_id

log = logging.getLogger("flowpilot.request")
_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestIdMiddleware:
    """Takes X-Request-ID from the caller (when sane) or makes one, puts it in every log line
    written while serving the request, and returns it in the response header."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _VALID_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id
        token = set_request_id(request_id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response["X-Request-ID"] = request_id
            log.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
            return response
        finally:
            reset_request_id(token)


class RejectNulMiddleware:
    """PostgreSQL text cannot hold NUL: a query string or path carrying one is answered 400
    here, once, instead of failing as a database error wherever it lands."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path or any(
            "\x00" in key or any("\x00" in value for value in values)
            for key, values in request.GET.lists()
        ):
            from django.http import JsonResponse

            from control_plane.core.errors import error_body

            message = "NUL characters are not allowed in URLs."
            return JsonResponse(error_body("bad_request", message), status=400)
        return self.get_response(request)
