"""Live updates of executions, fed by Postgres LISTEN/NOTIFY.

Triggers on executions, steps and log lines (migration 0007) NOTIFY the channel `CHANNEL` with
ids only, on commit, whichever process wrote the row. Each process that serves WebSockets holds
one `Listener`: a dedicated psycopg connection that LISTENs, started when the first socket
connects, and that forwards every notification to channel-layer groups, one per organization
and one per execution. Consumers (consumers.py) then read the row itself under the
organization's tenant context, so row-level security decides what a socket may see; the readers
below build the JSON they send.

After the listener (re)connects it asks every socket of the process to send a fresh snapshot:
what changed while the connection was down was not notified to anyone."""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from dataclasses import dataclass
from typing import Any

from django.db import connections

from control_plane.executions.models import ExecutionLog, ExecutionStep, WorkflowExecution

logger = logging.getLogger(__name__)

CHANNEL = "flowpilot_live"  # the NOTIFY channel of migration 0007
RESYNC_GROUP = "live.all"  # every socket of the process
CHANGE_EVENT = "live.change"  # channel-layer message types (consumer methods live_change, ...)
RESYNC_EVENT = "live.resync"
KINDS = ("execution", "step", "log")

SNAPSHOT_EXECUTIONS = 50  # the organization-wide snapshot: the most recent executions
SNAPSHOT_LOG_LINES = 500  # an execution's snapshot: its last log lines
HEARTBEAT_SECONDS = 30.0  # an idle listener checks its connection this often
RECONNECT_FIRST_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 5.0
# Django-only keys of a DATABASES entry's OPTIONS, which libpq does not know.
_DJANGO_OPTIONS = {"isolation_level", "server_side_binding", "assume_role", "pool"}


def organization_group(organization_id: int) -> str:
    return f"live.org.{int(organization_id)}"


def execution_group(execution_id: int) -> str:
    return f"live.execution.{int(execution_id)}"


@dataclass(frozen=True)
class Change:
    """One notification: which row of which execution of which organization changed."""

    organization: int
    execution: int
    kind: str
    id: int
    status: str | None

    @classmethod
    def parse(cls, payload: str) -> Change | None:
        try:
            data = json.loads(payload)
            change = cls(
                organization=int(data["org"]),
                execution=int(data["execution"]),
                kind=str(data["kind"]),
                id=int(data["id"]),
                status=data.get("status"),
            )
        except (ValueError, TypeError, KeyError):
            return None
        return change if change.kind in KINDS else None

    def event(self) -> dict[str, Any]:
        return {
            "type": CHANGE_EVENT,
            "organization": self.organization,
            "execution": self.execution,
            "kind": self.kind,
            "id": self.id,
            "status": self.status,
        }


def listen_params(alias: str = "default") -> dict[str, Any]:
    """libpq parameters of the database `alias` (the application role: LISTEN needs no
    privilege), with TCP keepalives so a silently dropped connection is noticed."""
    settings_dict = connections[alias].settings_dict
    params: dict[str, Any] = {
        key: value
        for key, value in (settings_dict.get("OPTIONS") or {}).items()
        if key not in _DJANGO_OPTIONS
    }
    params.update(
        dbname=settings_dict["NAME"],
        user=settings_dict.get("USER") or None,
        password=settings_dict.get("PASSWORD") or None,
        host=settings_dict.get("HOST") or None,
        port=str(settings_dict["PORT"]) if settings_dict.get("PORT") else None,
        application_name="flowpilot-live",
        keepalives=1,
        keepalives_idle=30,
        keepalives_interval=10,
        keepalives_count=3,
    )
    return {key: value for key, value in params.items() if value is not None}


class Listener:
    """One LISTEN connection for the process (strictly: for one event loop), reconnecting with
    exponential backoff, forwarding notifications to the channel layer."""

    def __init__(self, params: dict[str, Any] | None = None, layer: Any = None) -> None:
        self.params = params if params is not None else listen_params()
        self._layer = layer
        self._listening = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.backend_pid: int | None = None  # of the LISTEN connection, while connected
        self.connections = 0  # successful (re)connections so far

    @property
    def layer(self) -> Any:
        if self._layer is None:
            from channels.layers import get_channel_layer

            self._layer = get_channel_layer()
        return self._layer

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="flowpilot-live-listener"
            )

    async def ready(self, timeout: float = 5.0) -> bool:
        """Started and LISTENing (False when Postgres did not answer within `timeout`)."""
        self.start()
        try:
            await asyncio.wait_for(self._listening.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        import psycopg

        delay = RECONNECT_FIRST_SECONDS
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    **self.params, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.backend_pid = conn.info.backend_pid
                    self.connections += 1
                    self._listening.set()
                    delay = RECONNECT_FIRST_SECONDS
                    if self.connections > 1:
                        logger.info("live updates: listening again (pid %s)", self.backend_pid)
                    # Whatever changed before this LISTEN was notified to no one here.
                    await self.layer.group_send(RESYNC_GROUP, {"type": RESYNC_EVENT})
                    while True:
                        async for notify in conn.notifies(timeout=HEARTBEAT_SECONDS):
                            await self._forward(notify.payload)
                        await conn.execute("SELECT 1")  # idle: is the connection still there?
            except asyncio.CancelledError:
                raise
            except Exception as error:  # psycopg.OperationalError above all: Postgres went away
                logger.warning(
                    "live updates: LISTEN connection lost (%s); retrying in %.1f s",
                    error,
                    delay,
                )
            finally:
                self._listening.clear()
                self.backend_pid = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    async def _forward(self, payload: str) -> None:
        change = Change.parse(payload)
        if change is None:
            logger.warning("live updates: ignored a malformed notification")
            return
        event = change.event()
        await self.layer.group_send(execution_group(change.execution), event)
        if change.kind == "execution":
            await self.layer.group_send(organization_group(change.organization), event)


# One listener per event loop: uvicorn runs one loop per process; tests run one per case.
_listeners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Listener] = (
    weakref.WeakKeyDictionary()
)


def listener() -> Listener:
    """The listener of the running event loop, started if it is not running."""
    loop = asyncio.get_running_loop()
    current = _listeners.get(loop)
    if current is None:
        current = _listeners[loop] = Listener()
    current.start()
    return current


# -- what a socket is sent (read under tenant_context: the tenant managers need it) -------------

_EXECUTION_FIELDS = {
    "id": "id",
    "workflow_id": "workflow",
    "version__number": "version",
    "status": "status",
    "error": "error",
    "rerun_of_id": "rerun_of",
    "created_at": "created_at",
    "started_at": "started_at",
    "finished_at": "finished_at",
}
_STEP_FIELDS = (
    "step_id",
    "step_type",
    "position",
    "status",
    "attempts",
    "error",
    "started_at",
    "finished_at",
)
_LOG_FIELDS = ("id", "step_id", "level", "message", "created_at")


def _execution_rows(queryset) -> list[dict[str, Any]]:
    rows = queryset.values(*_EXECUTION_FIELDS)
    return [{name: row[field] for field, name in _EXECUTION_FIELDS.items()} for row in rows]


def execution_data(execution_id: int) -> dict[str, Any] | None:
    rows = _execution_rows(WorkflowExecution.objects.filter(pk=execution_id))
    return rows[0] if rows else None


def execution_snapshot(execution_id: int) -> dict[str, Any] | None:
    """An execution with its steps and last log lines; None when it is not visible."""
    execution = execution_data(execution_id)
    if execution is None:
        return None
    steps = ExecutionStep.objects.filter(execution_id=execution_id).order_by("position", "id")
    logs = list(
        ExecutionLog.objects.filter(execution_id=execution_id)
        .order_by("-id")
        .values(*_LOG_FIELDS)[: SNAPSHOT_LOG_LINES + 1]
    )
    return {
        "type": "snapshot",
        "execution": execution,
        "steps": list(steps.values(*_STEP_FIELDS)),
        "logs": logs[:SNAPSHOT_LOG_LINES][::-1],
        "logs_truncated": len(logs) > SNAPSHOT_LOG_LINES,
    }


def organization_snapshot() -> dict[str, Any]:
    """The organization's most recent executions, newest first."""
    recent = WorkflowExecution.objects.order_by("-created_at", "-id")[:SNAPSHOT_EXECUTIONS]
    ordered = _execution_rows(recent)
    return {"type": "snapshot", "executions": ordered}


def change_message(*, kind: str, row_id: int, execution_id: int) -> dict[str, Any] | None:
    """The message for one change: the row as it is now; None when it is not visible (another
    organization's, or gone)."""
    if kind == "execution":
        execution = execution_data(row_id)
        return {"type": "execution", "execution": execution} if execution else None
    if kind == "step":
        step = (
            ExecutionStep.objects.filter(pk=row_id, execution_id=execution_id)
            .values(*_STEP_FIELDS)
            .first()
        )
        return {"type": "step", "execution_id": execution_id, "step": step} if step else None
    if kind == "log":
        line = (
            ExecutionLog.objects.filter(pk=row_id, execution_id=execution_id)
            .values(*_LOG_FIELDS)
            .first()
        )
        return {"type": "log", "execution_id": execution_id, "log": line} if line else None
    return None
