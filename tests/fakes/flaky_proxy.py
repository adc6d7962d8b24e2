"""An HTTP proxy on 127.0.0.1 that fails on purpose, put between the control plane and the real
Dagster webserver (the control plane's FLOWPILOT_DAGSTER_URL points at it).

Each connection (one request: HTTP/1.0, as `httpx.post` makes them) gets a mode:
- `pass`: forwarded, and the target's answer returned;
- `refuse`: reset before anything is read or forwarded (the target never sees it);
- `bad_gateway`: forwarded, then answered 502 (the target acted; the caller thinks it failed);
- `hold`: forwarded, then the answer is held `hold_seconds` (past the caller's timeout) before
  it is written to a caller that is gone;
- `gated`: held before forwarding until `gate` is set (a test acts while a request is in flight).

Modes come from `script(...)` first (one per connection, in order), then at random from the
weights given to `chaos(...)` (seeded; `pass` only by default). `counts` tells how many
connections got each mode, `forwarded` how many requests reached the target."""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler

import httpx

from flowpilot.local_http import LocalHTTPServer

MODES = ("pass", "refuse", "bad_gateway", "hold", "gated")


class _Handler(BaseHTTPRequestHandler):
    def handle(self) -> None:
        proxy: FlakyProxy = self.server.owner
        self.mode = proxy.next_mode()
        if self.mode == "refuse":
            # SO_LINGER 0: close() sends a reset; nothing of the request is read.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        super().handle()

    def _forward(self) -> None:
        proxy: FlakyProxy = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.mode == "gated" and not proxy.gate.wait(timeout=60):
            self._answer(504, b'{"error": "gate never opened"}', "application/json")
            return
        try:
            upstream = httpx.request(
                self.command,
                f"{proxy.target}{self.path}",
                content=body,
                headers={"Content-Type": self.headers.get("Content-Type", "application/json")},
                timeout=proxy.upstream_timeout,
            )
        except httpx.HTTPError as exc:
            self._answer(
                502, f'{{"error": "upstream: {type(exc).__name__}"}}'.encode(), "text/plain"
            )
            return
        with proxy.lock:
            proxy.forwarded += 1
        if self.mode == "bad_gateway":
            self._answer(502, b'{"error": "bad gateway (flaky proxy)"}', "application/json")
            return
        if self.mode == "hold":
            time.sleep(proxy.hold_seconds)
        content_type = upstream.headers.get("Content-Type", "application/octet-stream")
        self._answer(upstream.status_code, upstream.content, content_type)

    do_GET = do_POST = _forward

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the caller gave up (a held answer): nobody to tell
            self.close_connection = True

    def log_message(self, format, *args):  # quiet
        return


class FlakyProxy(LocalHTTPServer):
    handler = _Handler

    def __init__(
        self,
        target: str,
        *,
        hold_seconds: float = 3.0,
        upstream_timeout: float = 60.0,
        seed: int = 0,
    ) -> None:
        self.target = target.rstrip("/")
        self.hold_seconds = hold_seconds
        self.upstream_timeout = upstream_timeout
        self.lock = threading.Lock()
        self.gate = threading.Event()
        self.counts: Counter[str] = Counter()
        self.forwarded = 0
        self._random = random.Random(seed)
        self._weights: dict[str, float] = {"pass": 1.0}
        self._script: deque[str] = deque()
        super().__init__()

    def chaos(self, **weights: float) -> None:
        """Pick each later connection's mode at random with these weights (`pass=...`, ...)."""
        unknown = set(weights) - set(MODES)
        if unknown:
            raise ValueError(f"unknown modes: {sorted(unknown)}")
        with self.lock:
            self._weights = dict(weights)

    def script(self, *modes: str) -> None:
        """The modes of the next connections, in order, before the random ones."""
        unknown = set(modes) - set(MODES)
        if unknown:
            raise ValueError(f"unknown modes: {sorted(unknown)}")
        with self.lock:
            self._script.extend(modes)

    def next_mode(self) -> str:
        with self.lock:
            if self._script:
                mode = self._script.popleft()
            else:
                names = list(self._weights)
                mode = self._random.choices(names, [self._weights[n] for n in names])[0]
            self.counts[mode] += 1
            return mode
