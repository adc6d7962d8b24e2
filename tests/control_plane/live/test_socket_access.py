"""Who may open a live socket: organizations never see each other's changes, and each kind of
refused credential, session or origin gets its close code."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from control_plane.core.tenancy import tenant_context
from control_plane.executions import consumers
from control_plane.executions import services as execution_services
from control_plane.executions.models import ExecutionLog
from control_plane.organizations import services as organization_services
from control_plane.users import sessions
from control_plane.users.models import UserSession
from tests.conftest import bearer_token
from tests.control_plane.live.support import (
    TIMEOUT,
    close_code,
    execution_path,
    executions_path,
    in_thread,
    new_execution,
    opened,
    run,
    set_status,
    socket,
)
from tests.factories import PASSWORD, make_member

pytestmark = pytest.mark.django_db(transaction=True)


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
