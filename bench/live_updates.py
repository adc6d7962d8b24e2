#!/usr/bin/env python
"""Live updates: the delay from a committed write to its message at a WebSocket client.

Setup, in a private FLOWPILOT_HOME (embedded PostgreSQL, migrations): one organization, its
owner's bearer token, one workflow and one execution. The control plane runs under uvicorn as
`flowpilot up` starts it (one process); a client (the `websockets` library, in this process)
opens `ws/v1/orgs/<org>/executions/<id>/` with the token and waits for its snapshot.

Then --writes log lines are inserted, each in its own transaction under the organization's
tenant context, by this process as the application role (as a Dagster run worker writes
them). The clock starts when COMMIT has returned and stops when the client has the line's
message, so the figure holds: the trigger's NOTIFY, the listener's forward through the
channel layer, the consumer's read of the row under row-level security, and the frame.

Two rounds:
  paced   one write at a time, the next after its message arrived (+ 10 ms): the latency
  burst   all writes back to back, messages counted as they come: latency under a queue

Run from the project root:

    .venv/bin/python bench/live_updates.py
    .venv/bin/python bench/live_updates.py --writes 1000 --keep
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

from _common import database_and_children, machine, percentile, private_home, wait_for_health


def populate() -> tuple[int, str, int, str]:
    """(organization id, its slug, an execution id, the owner's bearer token)."""
    from control_plane.core.tenancy import tenant_context
    from control_plane.executions.models import WorkflowExecution
    from control_plane.organizations import services as organization_services
    from control_plane.users.models import User
    from control_plane.users.sessions import session_create
    from control_plane.workflows.models import Workflow, WorkflowVersion

    owner = User.objects.create_user("owner@bench.test", "bench-password-123", email_verified=True)
    organization = organization_services.organization_create(
        name="Bench", slug="bench", owner=owner
    )
    with tenant_context(organization.pk):
        workflow = Workflow.objects.create(
            organization=organization, name="w", slug="w", draft_definition={"steps": []}
        )
        version = WorkflowVersion.objects.create(
            organization=organization,
            workflow=workflow,
            number=1,
            definition={"steps": []},
            content_hash="0" * 64,
        )
        execution = WorkflowExecution.objects.create(
            organization=organization, workflow=workflow, version=version, status="running"
        )
    _, token = session_create(user=owner, kind="api", ip=None, user_agent="bench")
    return organization.pk, organization.slug, execution.pk, token


class Client:
    """A WebSocket client whose reader thread stamps each log message on arrival."""

    def __init__(self, socket) -> None:
        self.socket = socket
        first = json.loads(self.socket.recv(timeout=10))
        if first.get("type") != "snapshot":
            raise SystemExit(f"expected a snapshot first, got {first}")
        self.arrived: dict[int, float] = {}
        self.condition = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for frame in self.socket:
                now = time.perf_counter()
                message = json.loads(frame)
                if message.get("type") == "log":
                    with self.condition:
                        self.arrived[message["log"]["id"]] = now
                        self.condition.notify_all()
        except ConnectionClosed:
            pass

    def wait_for(self, ids: set[int], timeout: float) -> bool:
        with self.condition:
            return self.condition.wait_for(lambda: ids <= self.arrived.keys(), timeout)

    def close(self) -> None:
        self.socket.close()
        self.reader.join(timeout=5)


def connect(url: str, token: str):
    from websockets.sync.client import connect

    return connect(url, additional_headers={"Authorization": f"Bearer {token}"}, proxy=None)


def write_log(organization_id: int, execution_id: int, n: int) -> tuple[int, float]:
    """Insert one log line in its own transaction; (its id, when COMMIT returned)."""
    from control_plane.core.tenancy import tenant_context
    from control_plane.executions.models import ExecutionLog

    with tenant_context(organization_id):
        line = ExecutionLog.objects.create(
            organization_id=organization_id, execution_id=execution_id, message=f"line {n}"
        )
    return line.pk, time.perf_counter()


def report(label: str, committed: dict[int, float], client: Client, wall: float) -> None:
    delays = [(client.arrived[i] - at) * 1000 for i, at in committed.items() if i in client.arrived]
    missing = len(committed) - len(delays)
    print(
        f"  {label:<6} {len(delays):>5} {percentile(delays, 0.5):>8.2f} ms "
        f"{percentile(delays, 0.95):>8.2f} ms {max(delays):>8.2f} ms "
        f"{len(committed) / wall:>8.0f}/s   missing {missing}"
    )


def run(args: argparse.Namespace, home: Path) -> int:
    from flowpilot import processes, runtime

    with database_and_children() as (cfg, children):
        organization_id, slug, execution_id, token = populate()
        log_dir = cfg.home / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        env = processes.child_env(cfg)
        children.append(
            processes.spawn(
                processes.control_plane_args(cfg), env, log_file=log_dir / "uvicorn.log"
            )
        )
        wait_for_health(cfg, children)
        url = f"ws://{cfg.host}:{cfg.port}/ws/v1/orgs/{slug}/executions/{execution_id}/"
        with connect(url, token) as socket:
            client = Client(socket)
            for n in range(5):  # warm-up: connections, the consumer's first reads
                line, _ = write_log(organization_id, execution_id, -n)
                client.wait_for({line}, 10)

            paced: dict[int, float] = {}
            started = time.perf_counter()
            for n in range(args.writes):
                line, at = write_log(organization_id, execution_id, n)
                paced[line] = at
                if not client.wait_for({line}, 10):
                    print(f"  line {n} did not arrive within 10 s")
                time.sleep(0.01)
            paced_wall = time.perf_counter() - started

            burst: dict[int, float] = {}
            started = time.perf_counter()
            for n in range(args.writes):
                line, at = write_log(organization_id, execution_id, n)
                burst[line] = at
            burst_wall = time.perf_counter() - started
            client.wait_for(set(burst), 30)
            client.close()
        runtime.close_db()

        print(
            f"\nCommitted write -> message at the socket, {args.writes} log lines per round, "
            "one uvicorn process, client and writer on the same machine"
        )
        print(f"machine: {machine()}")
        print(f"  {'round':<6} {'msgs':>5} {'p50':>11} {'p95':>11} {'max':>11} {'writes/s':>10}")
        report("paced", paced, client, paced_wall)
        report("burst", burst, client, burst_wall)
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--home", type=Path, help="FLOWPILOT_HOME to use (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep FLOWPILOT_HOME (and its logs)")
    args = parser.parse_args(argv)
    with private_home(args.home, args.keep) as home:
        return run(args, home)


if __name__ == "__main__":
    sys.exit(main())
