"""One execution's socket and the organization's executions socket: the snapshot, then each
change as it commits, whichever process or connection writes it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from control_plane.core.tenancy import tenant_context
from control_plane.executions import live
from control_plane.executions import services as execution_services
from control_plane.executions.models import ExecutionLog
from tests.control_plane.live.support import (
    TIMEOUT,
    execution_path,
    executions_path,
    in_thread,
    new_execution,
    opened,
    run,
    set_status,
    socket,
    until,
)

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
