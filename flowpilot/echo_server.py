"""A small local HTTP server that answers every request with what it received, as JSON. The
demo's http.request step calls it (no internet needed); tests use it the same way."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler

from flowpilot.local_http import LocalHTTPServer


class _Handler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            echo = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            echo = raw.decode(errors="replace")
        status = 200
        if self.path.startswith("/status/"):
            status = int(self.path.rsplit("/", 1)[1])
        elif self.path.startswith("/sleep/"):
            time.sleep(float(self.path.rsplit("/", 1)[1]))
        elif self.path.startswith("/flaky/"):
            # /flaky/<key>/<n>: the first n calls for a key answer 503, then 200.
            _, _, key, failures = self.path.split("/", 3)
            owner = self.server.owner
            with owner.lock:
                seen = owner.calls[key] = owner.calls.get(key, 0) + 1
            status = 503 if seen <= int(failures) else 200
        body = json.dumps(
            {"method": self.command, "path": self.path, "echo": echo, "headers": dict(self.headers)}
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, format, *args):  # quiet
        return


class EchoServer(LocalHTTPServer):
    handler = _Handler

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()
        super().__init__(host, port)
