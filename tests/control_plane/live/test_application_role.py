"""The sockets as production runs them, as the application role (no BYPASSRLS): row-level
security under the consumers' reads, and the real uvicorn server with a WebSocket client."""

from __future__ import annotations

import dataclasses
import json

import pytest
from django.db import connection

from control_plane.core.tenancy import tenant_context
from control_plane.executions import consumers, live
from control_plane.users import sessions
from tests.control_plane.live.support import execution_path, set_status

pytestmark = pytest.mark.django_db(transaction=True)


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
    from tests.e2e.support import free_port

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
