"""Health, the error shape, request ids, OpenAPI."""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import call_command
from django.test import override_settings
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def test_healthz():
    response = APIClient().get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_reports_dagster_down_as_503():
    with override_settings(DAGSTER_URL="http://127.0.0.1:9"):
        response = APIClient().get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"]["ok"] and checks["migrations"]["ok"]
    assert not checks["dagster"]["ok"]


class _GraphQL(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"data": {"version": "1.13.27"}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        return


@pytest.fixture
def graphql_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _GraphQL)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_readyz_ready_when_everything_answers(graphql_server):
    with override_settings(DAGSTER_URL=graphql_server):
        response = APIClient().get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["dagster"]["detail"] == "dagster 1.13.27"


def test_request_id_is_echoed_or_generated():
    client = APIClient()
    assert client.get("/healthz", HTTP_X_REQUEST_ID="abc-123")["X-Request-ID"] == "abc-123"
    generated = client.get("/healthz", HTTP_X_REQUEST_ID="bad id with spaces")["X-Request-ID"]
    assert len(generated) == 32


def test_errors_carry_the_request_id(api):
    response = api.get("/api/v1/workflows/999999", HTTP_X_REQUEST_ID="trace-1")
    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "not_found", "message": "Not found.", "request_id": "trace-1"}
    }


def test_unknown_url_is_json_404(api):
    response = api.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_wrong_method_is_405_in_the_error_shape(api):
    response = api.delete("/api/v1/workflows")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


def test_openapi_schema_and_swagger_ui():
    client = APIClient()
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = json.loads(schema.content)["paths"]
    assert "/api/v1/workflows/{workflow_id}/run" in paths
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger-ui" in docs.content


def test_openapi_schema_generates_without_warnings_and_validates():
    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
    assert "/api/v1/auth/login:" in out.getvalue()


def test_json_log_lines_carry_request_id():
    import logging

    from control_plane.core.logging import (
        JsonFormatter,
        RequestIdFilter,
        reset_request_id,
        set_request_id,
    )

    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    token = set_request_id("rid-9")
    try:
        RequestIdFilter().filter(record)
    finally:
        reset_request_id(token)
    line = json.loads(JsonFormatter().format(record))
    assert (
        line["message"] == "hello world"
        and line["request_id"] == "rid-9"
        and line["level"] == "INFO"
    )


def test_logged_requests_leave_out_the_query_string():
    """django.request attaches the request to 4xx log lines; its query string may hold one-time
    codes (OAuth callbacks, mailed links) and must not reach the logs."""
    import logging

    from django.test import RequestFactory

    from control_plane.core.logging import JsonFormatter

    request = RequestFactory().get("/api/v1/auth/oidc/sso/callback?code=SECRET-CODE&state=S")
    record = logging.LogRecord("django.request", logging.WARNING, __file__, 1, "Bad", (), None)
    record.request = request
    line = JsonFormatter().format(record)
    assert "SECRET-CODE" not in line
    assert json.loads(line)["request"] == "GET /api/v1/auth/oidc/sso/callback"


@pytest.mark.django_db
def test_nul_characters_are_a_400_not_a_database_error(api, published):
    """PostgreSQL text cannot hold NUL; it is refused at the door, in URLs and in JSON."""
    in_query = api.get("/api/v1/workflows?status=%00")
    assert in_query.status_code == 400 and in_query.json()["error"]["code"] == "bad_request"
    in_body = api.post(
        "/api/v1/workflows", {"name": "a\x00b", "definition": {"steps": []}}, format="json"
    )
    assert in_body.status_code == 400 and in_body.json()["error"]["code"] == "parse_error"


def _unreachable_database_error() -> Exception:
    """A real OperationalError: Django connecting to a port nothing listens on."""
    from django.db import connection
    from django.db.backends.postgresql.base import DatabaseWrapper

    settings_dict = {**connection.settings_dict, "HOST": "127.0.0.1", "PORT": "1"}
    wrapper = DatabaseWrapper(settings_dict, alias="unreachable")
    try:
        wrapper.ensure_connection()
    except Exception as exc:  # noqa: BLE001 - the error under test
        return exc
    raise AssertionError("connected to port 1")


def test_database_unavailable_is_503_with_retry_after_not_500():
    from django.db import OperationalError
    from django.test import RequestFactory
    from rest_framework.views import APIView

    from control_plane.core.errors import exception_handler, json_500

    error = _unreachable_database_error()
    assert isinstance(error, OperationalError)
    response = exception_handler(error, {"view": APIView()})
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert response.data["error"]["code"] == "unavailable"
    # Raised outside DRF (a middleware opening the tenant transaction): Django's handler500.
    try:
        raise error
    except OperationalError:
        page = json_500(RequestFactory().get("/api/v1/x"))
    assert page.status_code == 503
    assert json.loads(page.content)["error"]["code"] == "unavailable"
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        assert json_500(RequestFactory().get("/api/v1/x")).status_code == 500
