"""What the benchmarks share: a private FLOWPILOT_HOME with its own embedded PostgreSQL,
free ports, the machine description and percentiles."""

from __future__ import annotations

import math
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def machine() -> str:
    total = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs, {total} RAM, Python {sys.version.split()[0]}"


def configure_environment(home: Path) -> None:
    """Point this process (and, through child_env, its children) at a private installation.
    Must run before flowpilot.config is imported."""
    for name in ("DATABASE_URL", "DATABASE_OWNER_URL", "DAGSTER_PG_URL", "DAGSTER_HOME"):
        os.environ.pop(name, None)  # the embedded server under `home`, not someone else's
    os.environ.pop("DAGSTER_URL", None)
    os.environ["FLOWPILOT_HOME"] = str(home)
    os.environ["FLOWPILOT_PORT"] = str(free_port())
    os.environ["FLOWPILOT_DAGSTER_PORT"] = str(free_port())  # nothing listens: no webserver
    os.environ["DJANGO_SETTINGS_MODULE"] = "control_plane.settings.dev"
    os.environ.setdefault("LOG_LEVEL", "WARNING")


def wait_for_health(cfg: Any, children: list, timeout: float = 90.0) -> None:
    from flowpilot import processes

    url = f"{cfg.control_plane_url}/healthz"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if processes.wait_until(lambda: processes.http_ok(url), timeout=1.0, interval=0.1):
            return
        for child in children:
            if child.poll() is not None:
                raise SystemExit(f"{child.args[0]} exited ({child.returncode}) before /healthz")
    raise SystemExit(f"{url} not healthy within {timeout:.0f}s")


@contextmanager
def private_home(home: Path | None, keep: bool) -> Iterator[Path]:
    """A FLOWPILOT_HOME for one benchmark (a fresh temp dir unless given), configured for this
    process and its children, removed afterwards unless kept or given."""
    created = home is None
    path = Path(tempfile.mkdtemp(prefix="fp-bench-")) if created else home.resolve()
    configure_environment(path)
    from flowpilot import processes

    processes.sigterm_exits()
    print(f"FLOWPILOT_HOME {path}  control plane port {os.environ['FLOWPILOT_PORT']}")
    sys.stdout.flush()
    try:
        yield path
    finally:
        if keep or not created:
            print(f"kept {path} (logs in {path / 'logs'})")
        else:
            from flowpilot import config

            sock = config.socket_dir(path / "pg")
            if sock != path / "pg":
                shutil.rmtree(sock, ignore_errors=True)
            shutil.rmtree(path, ignore_errors=True)
