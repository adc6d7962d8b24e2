"""What the benchmarks share: a private FLOWPILOT_HOME with its own embedded PostgreSQL,
free ports, the machine description and percentiles."""

from __future__ import annotations

import math
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
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


@contextmanager
def database_and_children() -> Iterator[tuple[Any, list]]:
    """The embedded database (started if needed, migrated) and a list for the benchmark's
    child processes; on the way out the children are stopped, then the database if started
    here."""
    from flowpilot import config, processes, runtime

    cfg = config.load()
    started_db = False
    children: list = []
    try:
        started_db = runtime.start_database(cfg)
        runtime.migrate()
        yield cfg, children
    finally:
        for child in reversed(children):
            processes.stop(child)
        runtime.stop_database(cfg, started_db)


def hammer(
    base_url: str, senders: list[Callable[[Any], Any]], seconds: float
) -> tuple[float, list[float], dict[int, int]]:
    """One thread per sender, each calling it in a loop with its own httpx.Client for `seconds`.
    Returns (requests per second, latencies in seconds, count per status code)."""
    import httpx

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def worker(send: Callable[[Any], Any]) -> None:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                status = send(client).status_code
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    statuses[status] = statuses.get(status, 0) + 1

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(send,)) for send in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies) / (time.monotonic() - started), latencies, statuses
