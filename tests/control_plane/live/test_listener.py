"""The process's LISTEN connection (reconnecting, backing off, ignoring malformed payloads) and
what the database triggers NOTIFY: ids and a status, never a row's data."""

from __future__ import annotations

import psycopg
import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.utils import timezone

from control_plane.core.tenancy import tenant_context
from control_plane.executions import live
from control_plane.executions import services as execution_services
from control_plane.executions.models import ExecutionLog, ExecutionStep, WorkflowExecution
from tests.control_plane.live.support import (
    TIMEOUT,
    execution_path,
    in_thread,
    opened,
    run,
    set_status,
    socket,
    until,
)

pytestmark = pytest.mark.django_db(transaction=True)


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
