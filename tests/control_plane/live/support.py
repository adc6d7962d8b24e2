"""Helpers of the live-update WebSocket tests (control_plane/executions/live.py,
consumers.py), against the real ASGI application and the real database: rows are committed by
other threads and other connections, Postgres triggers NOTIFY on commit, the process's listener
forwards, and the consumer reads the row under the organization's tenant context.

Each test body is a coroutine run with `async_to_sync` (`run`); its database writes go through
`in_thread` (a pool thread, its own connection and transaction), as a Dagster worker's would."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlparse

from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from channels.db import database_sync_to_async

from control_plane.asgi import application
from control_plane.core.tenancy import tenant_context
from control_plane.executions import live
from control_plane.executions import services as execution_services
from control_plane.executions.models import WorkflowExecution

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
