"""Live updates over WebSockets (control_plane/executions/live.py, consumers.py), against the
real ASGI application and the real database: rows are committed by other threads and other
connections, Postgres triggers NOTIFY on commit, the process's listener forwards, and the
consumer reads the row under the organization's tenant context.

Each test body is a coroutine run with `async_to_sync`; its database writes go through
`in_thread` (a pool thread, its own connection and transaction), as a Dagster worker's would."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlparse

import psycopg
import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from control_plane.asgi import application
from control_plane.core.tenancy import tenant_context
from control_plane.executions import consumers, live
from control_plane.executions import services as execution_services
from control_plane.executions.models import ExecutionLog, ExecutionStep, WorkflowExecution
from control_plane.organizations import services as organization_services
from control_plane.users import sessions
from control_plane.users.models import UserSession
from tests.conftest import bearer_token
from tests.factories import PASSWORD, THREE_STEPS, make_member, make_published_workflow

TIMEOUT = 10  # seconds a message may take; they take milliseconds


class WebsocketCommunicator(ApplicationCommunicator):
    """channels.testing.WebsocketCommunicator, which cannot be imported without daphne (the
    package's __init__ imports its live-server test case: django/channels#1942). The same few
    calls over asgiref's ApplicationCommunicator, which channels' class also extends."""

    def __init__(self, app, path: str, headers=None, subprotocols=None) -> None:
        parsed = urlparse(path)
        scope = {
            "type": "websocket",
            "path": unquote(parsed.path),
            "query_string": parsed.query.encode(),
            "headers": headers or [],
            "subprotocols": subprotocols or [],
        }
        super().__init__(app, scope)

    async def connect(self, timeout: float = 1) -> tuple[bool, Any]:
        """(True, the chosen subprotocol) when accepted, (False, the close code) when not."""
        await self.send_input({"type": "websocket.connect"})
        response = await self.receive_output(timeout)
        if response["type"] == "websocket.close":
            return False, response.get("code", 1000)
        assert response["type"] == "websocket.accept", response
        return True, response.get("subprotocol")

    async def receive_json_from(self, timeout: float = 1) -> Any:
        response = await self.receive_output(timeout)
        assert response["type"] == "websocket.send" and "text" in response, response
        return json.loads(response["text"])

    async def disconnect(self, code: int = 1000, timeout: float = 1) -> None:
        await self.send_input({"type": "websocket.disconnect", "code": code})
        await self.wait(timeout)


def in_thread(function: Callable[[], Any]):
    """Run `function` in a pool thread with its own connection (closed afterwards)."""
    return database_sync_to_async(function, thread_sensitive=False)()


def socket(path: str, *, token: str | None = None, **options: Any) -> WebsocketCommunicator:
    headers = [(b"host", b"localhost"), (b"origin", options.pop("origin", b"http://localhost"))]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    if "cookie" in options:
        headers.append((b"cookie", options.pop("cookie").encode()))
    headers = [header for header in headers if header[1] is not None]
    return WebsocketCommunicator(application, path, headers=headers, **options)


async def opened(communicator: WebsocketCommunicator) -> dict:
    """Connect and return the first message (the snapshot)."""
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    return await communicator.receive_json_from(timeout=TIMEOUT)


async def close_code(communicator: WebsocketCommunicator) -> int:
    """Connect and return the code the server closes with (after accepting)."""
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    output = await communicator.receive_output(timeout=TIMEOUT)
    assert output["type"] == "websocket.close", output
    return output["code"]


async def until(communicator: WebsocketCommunicator, done: Callable[[dict], bool]) -> list[dict]:
    """Messages up to and including the first one `done` accepts."""
    messages: list[dict] = []
    while not messages or not done(messages[-1]):
        messages.append(await communicator.receive_json_from(timeout=TIMEOUT))
    return messages


def run(scenario: Callable[[], Any]) -> None:
    """Run a test body in an event loop of its own; the loop's listener stops with it."""

    async def body() -> None:
        try:
            await scenario()
        finally:
            await live.listener().stop()

    async_to_sync(body)()


def execution_path(org, execution_id: int) -> str:
    return f"/ws/v1/orgs/{org.slug}/executions/{execution_id}/"


def executions_path(org) -> str:
    return f"/ws/v1/orgs/{org.slug}/executions/"


def new_execution(workflow) -> WorkflowExecution:
    with tenant_context(workflow.organization_id):
        return execution_services.workflow_run(workflow=workflow)


def set_status(execution: WorkflowExecution, status: str) -> None:
    with tenant_context(execution.organization_id):
        WorkflowExecution.objects.filter(pk=execution.pk).update(status=status)


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """A channel layer per test: its queues belong to the test's event loop."""
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def token(user) -> str:
    return bearer_token(user)


@pytest.fixture
def execution(published) -> WorkflowExecution:
    return new_execution(published)


@pytest.fixture
def mallory(other_org):
    return make_member(other_org, "mallory@globex.test")


@pytest.fixture
def globex_execution(other_org, mallory) -> WorkflowExecution:
    return new_execution(make_published_workflow(other_org, mallory, THREE_STEPS, slug="theirs"))


pytestmark = pytest.mark.django_db(transaction=True)


# -- one execution ---------------------------------------------------------------------------


def test_snapshot_then_status_steps_and_logs_as_they_commit(org, token, execution):
    run_id = "run-live-1"
    tags = {execution_services.TAG_EXECUTION: str(execution.pk)}

    def start() -> None:
        with tenant_context(org.pk):
            execution_services.execution_start_for_run(run_id=run_id, tags=tags, inputs={})

    def step(status: str | None = None) -> None:
        common = {"execution_id": execution.pk, "step_id": "greet", "organization_id": org.pk}
        with tenant_context(org.pk):
            if status is None:
                execution_services.step_started(
                    **common, step_type="transform.template", position=0
                )
            else:
                execution_services.step_finished(
                    **common, step_type="transform.template", position=0, status=status
                )

    def log(message: str) -> None:
        with tenant_context(org.pk):
            ExecutionLog.objects.create(
                organization_id=org.pk, execution_id=execution.pk, step_id="greet", message=message
            )

    def finish() -> None:
        with tenant_context(org.pk):
            execution_services.execution_finish(run_id=run_id, run_status="SUCCESS")

    async def scenario() -> None:
        ws = socket(execution_path(org, execution.pk), token=token)
        snapshot = await opened(ws)
        assert snapshot["type"] == "snapshot"
        assert snapshot["execution"]["id"] == execution.pk
        assert snapshot["execution"]["status"] == "queued"
        assert snapshot["execution"]["version"] == 1
        assert (snapshot["steps"], snapshot["logs"], snapshot["logs_truncated"]) == ([], [], False)

        # The services write log lines of their own (run started, step started...): each wait
        # below takes the message it names, whatever log messages come before it.
        await in_thread(start)
        message = (await until(ws, lambda m: m["type"] == "execution"))[-1]
        assert message["execution"]["status"] == "running"
        assert message["execution"]["started_at"] is not None

        await in_thread(step)
        message = (await until(ws, lambda m: m["type"] == "step"))[-1]
        assert message["execution_id"] == execution.pk
        assert message["step"]["step_id"] == "greet"
        assert (message["step"]["status"], message["step"]["attempts"]) == ("running", 1)

        await in_thread(lambda: log("hello from greet"))
        message = (
            await until(
                ws, lambda m: m["type"] == "log" and m["log"]["message"] == "hello from greet"
            )
        )[-1]
        assert message["log"]["message"] == "hello from greet"
        assert (message["log"]["step_id"], message["log"]["level"]) == ("greet", "info")

        await in_thread(lambda: step("success"))
        message = (await until(ws, lambda m: m["type"] == "step"))[-1]
        assert message["step"]["status"] == "success" and message["step"]["finished_at"]

        await in_thread(finish)
        messages = await until(
            ws, lambda m: m["type"] == "step" and m["step"]["step_id"] == "length"
        )
        messages = [m for m in messages if m["type"] != "log"]
        assert messages[0]["type"] == "execution"
        assert messages[0]["execution"]["status"] == "success"
        assert messages[0]["execution"]["finished_at"] is not None
        skipped = {m["step"]["step_id"]: m["step"]["status"] for m in messages[1:]}
        assert skipped == {"shout": "skipped", "length": "skipped"}
        rest = []  # the run's closing log lines at most, then nothing
        while not await ws.receive_nothing(timeout=0.3):
            rest.append(await ws.receive_json_from(timeout=TIMEOUT))
        assert {m["type"] for m in rest} <= {"log"}
        await ws.disconnect()

        # A new socket's snapshot has it all.
        again = socket(execution_path(org, execution.pk), token=token)
        snapshot = await opened(again)
        assert snapshot["execution"]["status"] == "success"
        assert [(s["step_id"], s["status"]) for s in snapshot["steps"]] == [
            ("greet", "success"),
            ("shout", "skipped"),
            ("length", "skipped"),
        ]
        assert "hello from greet" in [line["message"] for line in snapshot["logs"]]
        await again.disconnect()

    run(scenario)


def test_a_raw_sql_write_from_another_connection_is_delivered(org, token, execution):
    """The trigger feeds the sockets, not Django: a plain psycopg connection (as any process
    writing to Postgres) is enough."""

    def raw_writes() -> None:
        with psycopg.connect(**live.listen_params(), autocommit=True) as conn:
            conn.execute(
                "UPDATE executions_workflowexecution SET status = 'running', started_at = now() "
                "WHERE id = %s",
                [execution.pk],
            )
            conn.execute(
                "INSERT INTO executions_executionlog "
                "(organization_id, execution_id, step_id, level, message, created_at) "
                "VALUES (%s, %s, '', 'warning', 'raw line', now())",
                [org.pk, execution.pk],
            )

    async def scenario() -> None:
        ws = socket(execution_path(org, execution.pk), token=token)
        await opened(ws)
        await ws.send_input({"type": "websocket.receive", "text": "not json"})  # ignored
        await in_thread(raw_writes)
        first, second = await ws.receive_json_from(TIMEOUT), await ws.receive_json_from(TIMEOUT)
        assert (first["type"], first["execution"]["status"]) == ("execution", "running")
        assert (second["type"], second["log"]["message"]) == ("log", "raw line")
        assert second["log"]["level"] == "warning"
        await ws.disconnect()

    run(scenario)


def test_an_update_that_changes_nothing_sends_nothing(org, token, execution):
    async def scenario() -> None:
        ws = socket(execution_path(org, execution.pk), token=token)
        await opened(ws)
        await in_thread(lambda: set_status(execution, "queued"))  # as it was
        await in_thread(lambda: set_status(execution, "running"))
        message = await ws.receive_json_from(TIMEOUT)
        assert message["execution"]["status"] == "running"
        assert await ws.receive_nothing(timeout=0.3)
        await ws.disconnect()

    run(scenario)


def test_the_snapshot_holds_the_last_log_lines(org, token, execution, monkeypatch):
    monkeypatch.setattr(live, "SNAPSHOT_LOG_LINES", 3)
    with tenant_context(org.pk):
        ExecutionLog.objects.bulk_create(
            ExecutionLog(organization_id=org.pk, execution=execution, message=f"line {n}")
            for n in range(5)
        )

    async def scenario() -> None:
        ws = socket(execution_path(org, execution.pk), token=token)
        snapshot = await opened(ws)
        assert [line["message"] for line in snapshot["logs"]] == ["line 2", "line 3", "line 4"]
        assert snapshot["logs_truncated"] is True
        await ws.disconnect()

    run(scenario)


# -- the organization's executions -------------------------------------------------------------


def test_organization_socket_snapshot_and_new_executions(org, token, published, execution):
    async def scenario() -> None:
        ws = socket(executions_path(org), token=token)
        snapshot = await opened(ws)
        assert [e["id"] for e in snapshot["executions"]] == [execution.pk]
        assert snapshot["executions"][0]["workflow"] == published.pk

        second = await in_thread(lambda: new_execution(published))
        message = await ws.receive_json_from(TIMEOUT)
        assert message == {
            "type": "execution",
            "execution": {
                "id": second.pk,
                "workflow": published.pk,
                "version": 1,
                "status": "queued",
                "error": "",
                "rerun_of": None,
                "created_at": message["execution"]["created_at"],
                "started_at": None,
                "finished_at": None,
            },
        }
        await in_thread(lambda: set_status(execution, "running"))
        message = await ws.receive_json_from(TIMEOUT)
        assert (message["execution"]["id"], message["execution"]["status"]) == (
            execution.pk,
            "running",
        )
        # Steps and log lines belong to the execution's own socket.
        with_step = lambda: execution_services.step_started(  # noqa: E731
            execution_id=execution.pk,
            step_id="greet",
            step_type="transform.template",
            position=0,
            organization_id=org.pk,
        )
        await in_thread(lambda: _in_org(org, with_step))
        assert await ws.receive_nothing(timeout=0.3)
        await ws.disconnect()

    run(scenario)


def _in_org(org, function: Callable[[], Any]) -> Any:
    with tenant_context(org.pk):
        return function()


# -- organizations never mix ---------------------------------------------------------------------


def test_another_organizations_changes_are_never_delivered(
    org, other_org, token, execution, globex_execution
):
    async def scenario() -> None:
        one = socket(execution_path(org, execution.pk), token=token)
        everything = socket(executions_path(org), token=token)
        await opened(one)
        snapshot = await opened(everything)
        assert [e["id"] for e in snapshot["executions"]] == [execution.pk]

        def globex_writes() -> None:
            set_status(globex_execution, "running")
            with tenant_context(other_org.pk):
                ExecutionLog.objects.create(
                    organization_id=other_org.pk, execution=globex_execution, message="secret"
                )
                execution_services.step_started(
                    execution_id=globex_execution.pk,
                    step_id="greet",
                    step_type="transform.template",
                    position=0,
                    organization_id=other_org.pk,
                )
            new_execution(globex_execution.workflow)

        await in_thread(globex_writes)
        await in_thread(lambda: set_status(execution, "running"))  # then one of acme's
        for ws in (one, everything):
            message = await ws.receive_json_from(TIMEOUT)
            assert (message["type"], message["execution"]["id"]) == ("execution", execution.pk)
            assert await ws.receive_nothing(timeout=0.3)
            await ws.disconnect()

    run(scenario)


def test_another_organizations_execution_cannot_be_opened(
    org, other_org, token, execution, globex_execution, mallory
):
    mallory = bearer_token(mallory)

    async def scenario() -> None:
        # Acme's member, globex's execution through acme's URL: not in acme.
        assert await close_code(socket(execution_path(org, globex_execution.pk), token=token)) == (
            consumers.CLOSE_NOT_FOUND
        )
        # Globex's member: acme's URL is not theirs; their own URL has no such execution.
        assert await close_code(socket(execution_path(org, execution.pk), token=mallory)) == (
            consumers.CLOSE_FORBIDDEN
        )
        assert await close_code(socket(executions_path(org), token=mallory)) == (
            consumers.CLOSE_FORBIDDEN
        )
        assert await close_code(socket(execution_path(other_org, execution.pk), token=mallory)) == (
            consumers.CLOSE_NOT_FOUND
        )

    run(scenario)


def test_every_websocket_route_has_a_cross_tenant_case():
    """The HTTP cross-tenant matrix walks Django's URL resolver (tests/api_routes.py), which
    does not hold WebSocket routes: the two tests above are their matrix."""
    named = {route.name for route in consumers.websocket_urlpatterns}
    assert named == {"ws-executions", "ws-execution", "ws-unknown"}


# -- who may connect -----------------------------------------------------------------------------


def test_close_codes(org, other_org, user, token, execution):
    viewer_without_executions = make_member(org, "carol@acme.test", role="workflow-reader")
    with tenant_context(org.pk):
        organization_services.role_create(
            organization=org,
            key="workflow-reader",
            name="Workflow reader",
            permissions=["workflow.read"],
            description="",
        )
    revoked = bearer_token(user)
    session = UserSession.objects.get(token_prefix=revoked[:12])
    sessions.session_revoke(user=user, session_id=session.pk)
    outsider = bearer_token(make_member(other_org, "mallory@globex.test"))
    reader = bearer_token(viewer_without_executions)
    path = execution_path(org, execution.pk)

    async def scenario() -> None:
        cases = {
            "no credentials": (socket(path), consumers.CLOSE_UNAUTHENTICATED),
            "bad token": (socket(path, token="fps_nope"), consumers.CLOSE_UNAUTHENTICATED),
            "not a token": (socket(path, token="abc"), consumers.CLOSE_UNAUTHENTICATED),
            "revoked session": (socket(path, token=revoked), consumers.CLOSE_UNAUTHENTICATED),
            "not a member": (socket(path, token=outsider), consumers.CLOSE_FORBIDDEN),
            "no execution.read": (socket(path, token=reader), consumers.CLOSE_FORBIDDEN),
            "unknown organization": (
                socket(f"/ws/v1/orgs/nope/executions/{execution.pk}/", token=token),
                consumers.CLOSE_FORBIDDEN,
            ),
            "unknown execution": (
                socket(execution_path(org, execution.pk + 1000), token=token),
                consumers.CLOSE_NOT_FOUND,
            ),
            "unknown route": (socket("/ws/v1/nothing/", token=token), consumers.CLOSE_NOT_FOUND),
        }
        codes = {name: await close_code(ws) for name, (ws, _) in cases.items()}
        assert codes == {name: code for name, (_, code) in cases.items()}

    run(scenario)


def test_a_bearer_header_does_not_fall_back_to_the_cookie(org, token, execution):
    cookie = _web_login()

    async def scenario() -> None:
        ws = socket(execution_path(org, execution.pk), token="fps_wrong", cookie=cookie)
        assert await close_code(ws) == consumers.CLOSE_UNAUTHENTICATED

    run(scenario)


def _web_login(email: str = "alice@acme.test") -> str:
    """The browser's session cookie after a real web login."""
    client = APIClient()
    response = client.post(
        "/api/v1/auth/login", {"email": email, "password": PASSWORD, "client": "web"}
    )
    assert response.status_code == 200, response.content
    return f"sessionid={response.cookies['sessionid'].value}"


def test_the_browser_session_cookie_and_its_logout(org, user, execution):
    cookie = _web_login()

    async def scenario() -> None:
        ws = socket(execution_path(org, execution.pk), cookie=cookie)
        assert (await opened(ws))["execution"]["id"] == execution.pk
        await ws.disconnect()

        def logout() -> None:
            client = APIClient()
            client.cookies.load(cookie)
            assert client.post("/api/v1/auth/logout").status_code == 204

        await in_thread(logout)
        assert await close_code(socket(execution_path(org, execution.pk), cookie=cookie)) == (
            consumers.CLOSE_UNAUTHENTICATED
        )

    run(scenario)


def test_the_revoked_browser_session_behind_a_cookie_is_refused(org, user, execution):
    cookie = _web_login()
    session = UserSession.objects.get(user=user, kind="web")
    sessions.session_revoke(user=user, session_id=session.pk)

    async def scenario() -> None:
        ws = socket(execution_path(org, execution.pk), cookie=cookie)
        assert await close_code(ws) == consumers.CLOSE_UNAUTHENTICATED

    run(scenario)


def test_the_bearer_subprotocol_for_browsers(org, token, execution):
    async def scenario() -> None:
        ws = socket(
            execution_path(org, execution.pk),
            subprotocols=[consumers.SUBPROTOCOL, consumers.BEARER_SUBPROTOCOL + token],
        )
        connected, chosen = await ws.connect(timeout=TIMEOUT)
        # The token is never echoed back: the server picks the plain protocol.
        assert (connected, chosen) == (True, consumers.SUBPROTOCOL)
        assert (await ws.receive_json_from(TIMEOUT))["type"] == "snapshot"
        await ws.disconnect()
        wrong = socket(
            execution_path(org, execution.pk),
            subprotocols=[consumers.SUBPROTOCOL, consumers.BEARER_SUBPROTOCOL + "fps_wrong"],
        )
        assert await close_code(wrong) == consumers.CLOSE_UNAUTHENTICATED

    run(scenario)


def test_origin_must_be_an_allowed_host_when_sent(org, token, execution):
    async def scenario() -> None:
        foreign = socket(
            execution_path(org, execution.pk), token=token, origin=b"https://evil.example"
        )
        assert await foreign.connect(timeout=TIMEOUT) == (False, 1000)  # refused handshake
        api_client = socket(execution_path(org, execution.pk), token=token, origin=None)
        assert (await opened(api_client))["type"] == "snapshot"
        await api_client.disconnect()

    run(scenario)


def test_a_socket_whose_session_is_revoked_is_closed_before_the_next_message(
    org, user, execution, settings
):
    settings.LIVE_AUTH_RECHECK_SECONDS = 0
    token = bearer_token(user)
    session = UserSession.objects.get(token_prefix=token[:12])

    async def scenario() -> None:
        ws = socket(execution_path(org, execution.pk), token=token)
        await opened(ws)
        await in_thread(lambda: sessions.session_revoke(user=user, session_id=session.pk))
        await in_thread(lambda: set_status(execution, "running"))
        output = await ws.receive_output(timeout=TIMEOUT)
        assert (output["type"], output["code"]) == ("websocket.close", 4401)

    run(scenario)


def test_a_member_removed_while_connected_gets_4403(org, user, execution, settings):
    settings.LIVE_AUTH_RECHECK_SECONDS = 0
    token = bearer_token(user)

    async def scenario() -> None:
        ws = socket(executions_path(org), token=token)
        await opened(ws)

        def demote() -> None:
            with tenant_context(org.pk):
                from control_plane.organizations.models import OrganizationMember

                OrganizationMember.objects.filter(user=user).update(status="suspended")

        await in_thread(demote)
        await in_thread(lambda: set_status(execution, "running"))
        output = await ws.receive_output(timeout=TIMEOUT)
        assert (output["type"], output["code"]) == ("websocket.close", 4403)

    run(scenario)


# -- the listener ------------------------------------------------------------------------------


def test_the_listener_reconnects_after_its_connection_is_terminated(org, token, execution):
    def terminate(pid: int) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
            assert cursor.fetchone() == (True,)

    async def scenario() -> None:
        ws = socket(execution_path(org, execution.pk), token=token)
        await opened(ws)
        listener = live.listener()
        first_pid = listener.backend_pid
        assert first_pid and listener.connections == 1

        await in_thread(lambda: terminate(first_pid))
        # While it was away nothing was notified here: every socket gets a fresh snapshot.
        await in_thread(lambda: set_status(execution, "running"))
        snapshots = await until(ws, lambda m: m["type"] == "snapshot")
        assert listener.connections == 2 and listener.backend_pid not in (None, first_pid)
        # The write may land before or after the new LISTEN; the snapshot or a message has it.
        later = snapshots[-1]["execution"]["status"]
        if later != "running":
            message = await ws.receive_json_from(TIMEOUT)
            assert message["execution"]["status"] == "running"

        await in_thread(lambda: set_status(execution, "success"))
        message = await ws.receive_json_from(TIMEOUT)
        assert message["execution"]["status"] == "success"
        await ws.disconnect()

    run(scenario)


def test_the_listener_waits_for_postgres_and_backs_off():
    """A listener pointed at a database that does not answer keeps retrying, not crashing."""

    async def scenario() -> None:
        params = {**live.listen_params(), "dbname": "no_such_database_for_live"}
        listener = live.Listener(params=params, layer=object())
        assert await listener.ready(timeout=0.5) is False
        assert listener.running and listener.connections == 0
        await listener.stop()
        assert not listener.running

    async_to_sync(scenario)()


def test_malformed_notifications_are_ignored():
    payloads = [
        "",
        "not json",
        "[]",
        '{"org": 1}',
        '{"org": 1, "execution": 2, "kind": "x", "id": 3}',
    ]
    assert [live.Change.parse(payload) for payload in payloads] == [None] * len(payloads)


def test_notification_payloads_carry_ids_only(org, execution):
    """What crosses the NOTIFY channel (readable by any listener of the database): ids and a
    status, never the row's data."""

    def captured() -> list[str]:
        with psycopg.connect(**live.listen_params(), autocommit=True) as conn:
            conn.execute(f"LISTEN {live.CHANNEL}")
            with tenant_context(org.pk):
                ExecutionLog.objects.create(
                    organization_id=org.pk, execution=execution, message="secret text"
                )
                WorkflowExecution.objects.filter(pk=execution.pk).update(
                    status="running", error="secret error", started_at=timezone.now()
                )
            return [n.payload for n in conn.notifies(timeout=2, stop_after=2)]

    payloads = captured()
    assert len(payloads) == 2
    assert all("secret" not in payload for payload in payloads)
    changes = [live.Change.parse(payload) for payload in payloads]
    log_id = ExecutionLog.objects.unscoped().get().pk
    assert changes == [
        live.Change(org.pk, execution.pk, "log", log_id, None),
        live.Change(org.pk, execution.pk, "execution", execution.pk, "running"),
    ]


def test_step_rows_notify_with_their_status(org, execution):
    def captured() -> list[live.Change | None]:
        with psycopg.connect(**live.listen_params(), autocommit=True) as conn:
            conn.execute(f"LISTEN {live.CHANNEL}")
            with tenant_context(org.pk):
                execution_services.step_started(
                    execution_id=execution.pk,
                    step_id="greet",
                    step_type="transform.template",
                    position=0,
                    organization_id=org.pk,
                )
            changes = [live.Change.parse(n.payload) for n in conn.notifies(timeout=2, stop_after=2)]
            return [change for change in changes if change.kind == "step"]  # and its log line

    changes = captured()
    step = ExecutionStep.objects.unscoped().get()
    assert changes == [live.Change(org.pk, execution.pk, "step", step.pk, "running")]


# -- row-level security: what the socket reads, as the application role -------------------------


@pytest.mark.django_db(transaction=False)
def test_socket_reads_as_the_application_role(
    org, other_org, user, execution, globex_execution, as_app_role
):
    """In production the consumers' reads run as the role without BYPASSRLS: the membership
    check (which needs flowpilot.user_id) and every reader work under row-level security, and
    another organization's rows are invisible even by id."""
    globex = globex_execution
    session, _ = sessions.session_create(user=user, kind="api", ip=None, user_agent="pytest")
    access = consumers._access
    assert access(user_session_id=session.pk, slug=org.slug, execution_id=execution.pk) == (
        0,
        org.pk,
    )
    assert access(user_session_id=session.pk, slug=org.slug, execution_id=globex.pk) == (
        consumers.CLOSE_NOT_FOUND,
        org.pk,
    )
    assert access(user_session_id=session.pk, slug=other_org.slug, execution_id=None) == (
        consumers.CLOSE_FORBIDDEN,
        None,
    )
    with tenant_context(org.pk, user_id=user.pk):
        assert live.execution_snapshot(execution.pk)["execution"]["id"] == execution.pk
        assert [e["id"] for e in live.organization_snapshot()["executions"]] == [execution.pk]
        assert live.execution_snapshot(globex.pk) is None
        assert (
            live.change_message(kind="execution", row_id=globex.pk, execution_id=globex.pk) is None
        )
        with connection.cursor() as cursor:  # the database itself hides it, not only the ORM
            cursor.execute("SELECT count(*) FROM executions_workflowexecution")
            assert cursor.fetchone() == (1,)


# -- the real server -----------------------------------------------------------------------------


@pytest.mark.slow
def test_under_uvicorn_as_the_application_role(org, token, execution, tmp_path):
    """The control plane as `flowpilot up` starts it (uvicorn, control_plane.asgi), connected
    to the test database as the application role (no BYPASSRLS), and a real WebSocket client:
    the snapshot, a change written by this process, and a refused handshake's close code."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from flowpilot import config, processes
    from tests.e2e.conftest import free_port

    port = free_port()
    cfg = dataclasses.replace(config.load(), port=port)
    database = connection.settings_dict["NAME"]
    env = processes.child_env(
        cfg,
        DATABASE_URL=config.embedded_url(cfg.pg_dir, database, config.APP_ROLE),
        DATABASE_OWNER_URL=config.embedded_url(cfg.pg_dir, database, config.OWNER_ROLE),
        DJANGO_SETTINGS_MODULE="control_plane.settings.dev",
        FLOWPILOT_PORT=str(port),
        DAGSTER_HOME=str(tmp_path / "dagster"),
        LOG_LEVEL="WARNING",
    )
    server = processes.spawn(
        processes.control_plane_args(cfg), env, log_file=tmp_path / "uvicorn.log"
    )
    base = f"127.0.0.1:{port}"
    try:
        assert processes.wait_until(
            lambda: processes.http_ok(f"http://{base}/healthz"), timeout=60
        ), (tmp_path / "uvicorn.log").read_text()
        url = f"ws://{base}{execution_path(org, execution.pk)}"
        headers = {"Authorization": f"Bearer {token}"}
        with connect(url, additional_headers=headers, proxy=None) as ws:
            snapshot = json.loads(ws.recv(timeout=10))
            assert (snapshot["type"], snapshot["execution"]["id"]) == ("snapshot", execution.pk)
            set_status(execution, "running")
            message = json.loads(ws.recv(timeout=10))
            assert (message["type"], message["execution"]["status"]) == ("execution", "running")
        with connect(url, proxy=None) as ws:  # no credentials
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd.code == consumers.CLOSE_UNAUTHENTICATED
    finally:
        processes.stop(server)
