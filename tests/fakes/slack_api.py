"""A small, real Slack Web API on 127.0.0.1 (`chat.postMessage`, `auth.test`), in a thread like
flowpilot/echo_server.py, so the Slack step and resource are tested over HTTP with slack_sdk.

It checks the bearer token, answers as Slack does (HTTP 200 with `{"ok": false, "error": ...}`
for API errors, 429 with Retry-After when rate-limited) and records every message posted. Tests
make it misbehave with `missing_channels`, `not_in_channels` and `rate_limit_next(seconds)`."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl

from flowpilot.local_http import LocalHTTPServer

TOKEN = "xoxb-test-token"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        fake = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode() if length else ""
        if "json" in self.headers.get("Content-Type", ""):
            args = json.loads(raw) if raw else {}
        else:
            args = dict(parse_qsl(raw))
        method = self.path.removeprefix("/api/")
        with fake.lock:
            fake.requests.append({"method": method, "args": args})
            limited = fake.rate_limit_seconds
            fake.rate_limit_seconds = None
        if limited is not None:
            self._json({"ok": False, "error": "ratelimited"}, 429, {"Retry-After": str(limited)})
            return
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            self._json({"ok": False, "error": "not_authed"})
        elif auth.removeprefix("Bearer ") != fake.token:
            self._json({"ok": False, "error": "invalid_auth"})
        elif method == "auth.test":
            self._json(
                {
                    "ok": True,
                    "url": "https://flowpilot-test.slack.com/",
                    "team": "FlowPilot Test",
                    "user": "flowpilot",
                    "team_id": "T0001",
                    "user_id": "U0001",
                    "bot_id": "B0001",
                }
            )
        elif method == "chat.postMessage":
            self._json(fake.post_message(args))
        else:
            self._json({"ok": False, "error": "unknown_method"}, 404)

    def _json(self, body: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format, *args):  # quiet
        return


class FakeSlack(LocalHTTPServer):
    handler = _Handler

    def __init__(self, token: str = TOKEN, host: str = "127.0.0.1", port: int = 0):
        self.token = token
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.missing_channels: set[str] = set()
        self.not_in_channels: set[str] = set()
        self.rate_limit_seconds: int | None = None
        self._channel_ids: dict[str, str] = {}
        super().__init__(host, port)

    @property
    def url(self) -> str:
        """The Web API root, as `WebClient(base_url=...)` wants it."""
        return f"{self.base_url}/api/"

    def rate_limit_next(self, seconds: int) -> None:
        self.rate_limit_seconds = seconds

    def channel_id(self, channel: str) -> str:
        """Names get stable ids (C0001, ...); an id is its own id."""
        if channel[:1] in "CDG" and channel[1:].isalnum() and channel.isupper():
            return channel
        with self.lock:
            name = channel.removeprefix("#")
            return self._channel_ids.setdefault(name, f"C{len(self._channel_ids) + 1:04d}")

    def messages_in(self, channel: str) -> list[dict[str, Any]]:
        wanted = self.channel_id(channel)
        return [m for m in self.messages if m["channel"] == wanted]

    def post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel") or "")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if channel in self.missing_channels:
            return {"ok": False, "error": "channel_not_found"}
        if channel in self.not_in_channels:
            return {"ok": False, "error": "not_in_channel"}
        if not args.get("text") and not args.get("blocks"):
            return {"ok": False, "error": "no_text"}
        blocks = args.get("blocks")
        if isinstance(blocks, str):  # form-encoded clients send blocks as JSON text
            blocks = json.loads(blocks)
        if blocks is not None and not isinstance(blocks, list):
            return {"ok": False, "error": "invalid_blocks", "errors": ["must be an array"]}
        with self.lock:
            ts = f"{int(time.time())}.{len(self.messages) + 1:06d}"
        message = {
            "channel": self.channel_id(channel),
            "channel_name": channel,
            "text": args.get("text", ""),
            "blocks": blocks,
            "thread_ts": args.get("thread_ts"),
            "ts": ts,
        }
        with self.lock:
            self.messages.append(message)
        return {
            "ok": True,
            "channel": message["channel"],
            "ts": ts,
            "message": {"type": "message", "text": message["text"], "ts": ts, "bot_id": "B0001"},
        }
