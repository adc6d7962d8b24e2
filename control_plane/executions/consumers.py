"""WebSocket consumers: follow an organization's executions, or one execution, live.

- `ws/v1/orgs/<org>/executions/`: status and timings of every execution of the organization;
- `ws/v1/orgs/<org>/executions/<id>/`: one execution, its steps and its log lines.

Who is asking (`SocketAuthMiddleware`), in this order: an `Authorization: Bearer fps_...`
header (API clients); a `flowpilot.bearer.<token>` subprotocol next to `flowpilot.v1` (the
browser's WebSocket API cannot set headers); the browser's session cookie. Each is checked as
for HTTP: a revoked or expired session, or an inactive user, is nobody.

A socket first gets a snapshot (so a client misses nothing between its GET and its subscribe),
then one message per committed change, each read under the organization's tenant context.
Refusals are sent after the handshake, as close codes: 4401 not signed in, 4403 not an active
member of the organization or no `execution.read`, 4404 no such execution in it."""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from functools import partial
from importlib import import_module
from types import SimpleNamespace
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.contrib import auth
from django.core.serializers.json import DjangoJSONEncoder
from django.db import Error as DatabaseError
from django.http.cookie import parse_cookie
from django.urls import path, re_path

from control_plane.core.tenancy import tenant_context
from control_plane.executions import live
from control_plane.organizations import selectors as organization_selectors
from control_plane.organizations import services as organization_services
from control_plane.users import sessions
from control_plane.users.models import UserSession

logger = logging.getLogger(__name__)

SUBPROTOCOL = "flowpilot.v1"
BEARER_SUBPROTOCOL = "flowpilot.bearer."  # + the token
PERMISSION = "execution.read"
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_UNAVAILABLE = 1011  # the database did not answer


# -- who is asking -----------------------------------------------------------------------------


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin1")
    return None


def _browser_session(scope: dict) -> UserSession | None:
    """The UserSession behind the Django session cookie, checked as UserSessionMiddleware and
    Django's own `get_user` do (a password change since login signs the cookie out)."""
    cookie = _header(scope, b"cookie")
    key = parse_cookie(cookie).get(settings.SESSION_COOKIE_NAME) if cookie else None
    if not key:
        return None
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key=key)
    user_id = store.get(auth.SESSION_KEY)
    if user_id is None:
        return None
    user_session = sessions.session_for_id(store.get(sessions.SESSION_KEY))
    if user_session is None or str(user_session.user_id) != str(user_id):
        return None
    user = auth.get_user(SimpleNamespace(session=store))
    return user_session if user.is_authenticated and user.pk == user_session.user_id else None


def socket_session(scope: dict) -> UserSession | None:
    """The live UserSession a WebSocket handshake proves, or None."""
    authorization = _header(scope, b"authorization")
    if authorization is not None:  # offered: it alone decides, as for HTTP
        parts = authorization.split()
        if len(parts) == 2 and parts[0].lower() == "bearer":
            return sessions.session_for_token(parts[1])
        return None
    for protocol in scope.get("subprotocols") or []:
        if protocol.startswith(BEARER_SUBPROTOCOL):
            return sessions.session_for_token(protocol.removeprefix(BEARER_SUBPROTOCOL))
    return _browser_session(scope)


class SocketAuthMiddleware:
    """Puts the handshake's live UserSession (or None) in `scope["user_session"]` and its user
    in `scope["user"]`."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        user_session = await database_sync_to_async(socket_session)(scope)
        scope = {
            **scope,
            "user_session": user_session,
            "user": user_session.user if user_session else None,
        }
        return await self.application(scope, receive, send)


class BrowserOriginValidator(OriginValidator):
    """Channels' AllowedHostsOriginValidator, except that a handshake without an Origin header
    passes: browsers always send one (it is what stops another site's page from using the
    cookie), while API clients usually send none and prove themselves with a token."""

    def __init__(self, application: Any) -> None:
        allowed = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not allowed:
            allowed = ["localhost", "127.0.0.1", "[::1]"]
        super().__init__(application, allowed)

    def valid_origin(self, parsed_origin) -> bool:
        return parsed_origin is None or super().valid_origin(parsed_origin)


# -- what a socket may see ---------------------------------------------------------------------


def _access(*, user_session_id: int, slug: str, execution_id: int | None) -> tuple[int, int | None]:
    """(0 or a close code, the organization id) for a socket, checked again before sending."""
    user_session = sessions.session_for_id(user_session_id)
    if user_session is None:
        return CLOSE_UNAUTHENTICATED, None
    with tenant_context(None, user_id=user_session.user_id):  # a user sees their memberships
        membership = organization_selectors.membership_for(user=user_session.user, slug=slug)
    if membership is None:
        return CLOSE_FORBIDDEN, None
    organization_id = membership.organization_id
    with tenant_context(organization_id, user_id=user_session.user_id):
        if PERMISSION not in organization_services.role_permissions(role=membership.role):
            return CLOSE_FORBIDDEN, organization_id
        if execution_id is not None and live.execution_data(execution_id) is None:
            return CLOSE_NOT_FOUND, organization_id
    return 0, organization_id


def _in_tenant(organization_id: int, user_id: int, read, **kwargs: Any) -> Any:
    with tenant_context(organization_id, user_id=user_id):
        return read(**kwargs)


async def _db(function, **kwargs: Any) -> Any:
    """A database call off the event loop, in a pool thread: sockets read in parallel."""
    return await database_sync_to_async(partial(function, **kwargs), thread_sensitive=False)()


# -- consumers ---------------------------------------------------------------------------------


class _LiveConsumer(AsyncJsonWebsocketConsumer, ABC):
    execution_id: int | None = None
    organization_id: int | None = None
    user_session_id: int | None = None
    user_id: int | None = None
    checked_at = 0.0  # when session, membership and permission were last checked
    _subscribed: tuple[str, ...] = ()
    _closed = False

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        self._closed = True  # nothing may be sent after the close frame
        await super().close(code=code, reason=reason)

    @classmethod
    async def encode_json(cls, content: dict) -> str:
        return DjangoJSONEncoder().encode(content)

    async def connect(self) -> None:
        offered = self.scope.get("subprotocols") or []
        await self.accept(SUBPROTOCOL if SUBPROTOCOL in offered else None)
        try:
            await self._start()
        except DatabaseError:
            logger.exception("live updates: database unavailable for a socket")
            await self.close(code=CLOSE_UNAVAILABLE)

    async def _start(self) -> None:
        user_session = self.scope.get("user_session")
        if user_session is None:
            return await self.close(code=CLOSE_UNAUTHENTICATED)
        self.user_session_id, self.user_id = user_session.pk, user_session.user_id
        kwargs = self.scope["url_route"]["kwargs"]
        self.execution_id = kwargs.get("execution_id")
        code, self.organization_id = await _db(
            _access,
            user_session_id=self.user_session_id,
            slug=kwargs["org"],
            execution_id=self.execution_id,
        )
        if code:
            return await self.close(code=code)
        self.checked_at = time.monotonic()
        # LISTENing and subscribed before the snapshot is read: nothing falls in between.
        await live.listener().ready()
        self._subscribed = (live.RESYNC_GROUP, self.group())
        for group in self._subscribed:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.send_snapshot()

    async def disconnect(self, code: int) -> None:
        for group in self._subscribed:
            await self.channel_layer.group_discard(group, self.channel_name)
        self._subscribed = ()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Clients only listen; anything they send is ignored (not even parsed)."""

    @abstractmethod
    def group(self) -> str:
        """The channel-layer group this socket follows."""

    @abstractmethod
    def snapshot(self) -> dict[str, Any] | None:
        """The state sent first (and after a listener reconnect); None when not found."""

    async def send_snapshot(self) -> None:
        message = await self._read(self.snapshot)
        if message is None:
            return await self.close(code=CLOSE_NOT_FOUND)
        await self.send_json(message)

    async def _read(self, read, **kwargs: Any) -> Any:
        return await _db(
            _in_tenant,
            organization_id=self.organization_id,
            user_id=self.user_id,
            read=read,
            **kwargs,
        )

    async def _still_allowed(self) -> bool:
        """Re-check session, membership and permission at most every
        LIVE_AUTH_RECHECK_SECONDS; close the socket when they are gone."""
        if time.monotonic() - self.checked_at < settings.LIVE_AUTH_RECHECK_SECONDS:
            return True
        code, organization_id = await _db(
            _access,
            user_session_id=self.user_session_id,
            slug=self.scope["url_route"]["kwargs"]["org"],
            execution_id=self.execution_id,
        )
        if code or organization_id != self.organization_id:
            await self.close(code=code or CLOSE_FORBIDDEN)
            return False
        self.checked_at = time.monotonic()
        return True

    # Channel-layer events (live.Listener).

    async def live_change(self, event: dict[str, Any]) -> None:
        if self._closed or event["organization"] != self.organization_id:
            return
        try:
            if not await self._still_allowed():
                return
            message = await self._read(
                live.change_message,
                kind=event["kind"],
                row_id=event["id"],
                execution_id=event["execution"],
            )
        except DatabaseError:
            # The change cannot be read, so the client's state would silently fall behind:
            # close, and its reconnection starts over from a snapshot.
            logger.exception("live updates: could not read a change")
            await self.close(code=CLOSE_UNAVAILABLE)
            return
        if message is not None:
            await self.send_json(message)

    async def live_resync(self, event: dict[str, Any]) -> None:
        if self._closed:
            return
        try:
            if await self._still_allowed():
                await self.send_snapshot()
        except DatabaseError:
            logger.exception("live updates: could not send a snapshot")
            await self.close(code=CLOSE_UNAVAILABLE)  # the client reconnects and starts over


class OrganizationExecutionsConsumer(_LiveConsumer):
    """Every execution of the organization: a snapshot of the most recent, then changes."""

    def group(self) -> str:
        return live.organization_group(self.organization_id)

    def snapshot(self) -> dict[str, Any]:
        return live.organization_snapshot()


class ExecutionConsumer(_LiveConsumer):
    """One execution: status and timings, steps, log lines."""

    def group(self) -> str:
        return live.execution_group(self.execution_id)

    def snapshot(self) -> dict[str, Any] | None:
        return live.execution_snapshot(self.execution_id)


class UnknownRouteConsumer(AsyncJsonWebsocketConsumer):
    """Any other WebSocket path: closed with 4404 rather than an error in the server log."""

    async def connect(self) -> None:
        await self.accept()
        await self.close(code=CLOSE_NOT_FOUND)


websocket_urlpatterns = [
    path(
        "ws/v1/orgs/<slug:org>/executions/",
        OrganizationExecutionsConsumer.as_asgi(),
        name="ws-executions",
    ),
    path(
        "ws/v1/orgs/<slug:org>/executions/<int:execution_id>/",
        ExecutionConsumer.as_asgi(),
        name="ws-execution",
    ),
    re_path(r"", UnknownRouteConsumer.as_asgi(), name="ws-unknown"),
]
