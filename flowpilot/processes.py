"""Child processes the CLI starts (control plane, Dagster): one environment for all of them,
each in its own process group so stopping it also stops whatever it spawned."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from flowpilot import config, shards


def bin_path(name: str) -> str:
    """An executable of this environment (the venv's `dagster`, `uvicorn`...)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


def prepare_dagster_home(cfg: config.Config) -> Path:
    home = cfg.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config.PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def child_env(cfg: config.Config, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        FLOWPILOT_HOME=str(cfg.home),
        DAGSTER_HOME=str(prepare_dagster_home(cfg)),
        DATABASE_URL=cfg.database_url,
        DATABASE_OWNER_URL=cfg.database_owner_url,
        DAGSTER_PG_URL=cfg.dagster_pg_url,
        DAGSTER_URL=cfg.dagster_url,
        DJANGO_SETTINGS_MODULE=env.get("DJANGO_SETTINGS_MODULE", "control_plane.settings.dev"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def control_plane_args(cfg: config.Config) -> list[str]:
    """The control plane under uvicorn (ASGI) at FLOWPILOT_HOST:FLOWPILOT_PORT."""
    return [
        bin_path("uvicorn"),
        "control_plane.asgi:application",
        "--host",
        cfg.host,
        "--port",
        str(cfg.port),
        "--no-access-log",
    ]


def dagster_dev_args(cfg: config.Config, workspace: Path | None = None) -> list[str]:
    """Dagster webserver + daemon for `flowpilot up`, on `workspace` (default: the python-module
    workspace, for which `dagster dev` starts the code servers itself)."""
    host, port = cfg.dagster_host, str(cfg.dagster_port)
    workspace = workspace or shards.workspace_file(cfg)
    return [bin_path("dagster"), "dev", "-w", str(workspace), "-h", host, "-p", port]


def code_server_args(cfg: config.Config, shard: int, endpoint: int | Path) -> list[str]:
    """FlowPilot's code server (orchestration/code_server.py) for one shard, on a TCP port or a
    Unix socket path."""
    where = ["--socket", str(endpoint)] if isinstance(endpoint, Path) else ["--port", str(endpoint)]
    return [
        sys.executable,
        "-m",
        "orchestration.code_server",
        "--host",
        "127.0.0.1",
        *where,
        "--attribute",
        shards.attribute(shard, cfg.code_shards),
        "--location-name",
        shards.location_name(shard, cfg.code_shards),
        "--working-directory",
        str(config.PROJECT_ROOT),
    ]


def code_server_ready(endpoint: int | Path) -> bool:
    """The code server on `endpoint` (a TCP port or a Unix socket) answers: it has loaded."""
    from dagster._grpc.client import DagsterGrpcClient

    if isinstance(endpoint, Path):
        client = DagsterGrpcClient(socket=str(endpoint))
    else:
        client = DagsterGrpcClient(port=endpoint, host="127.0.0.1")
    try:
        client.ping("flowpilot")
    except Exception:
        return False
    return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def dagster_daemon_args(cfg: config.Config | None = None) -> list[str]:
    workspace = str(shards.workspace_file(cfg or config.load()))
    return [bin_path("dagster-daemon"), "run", "-w", workspace]


def spawn(args: list[str], env: dict[str, str], log_file: Path | None = None) -> subprocess.Popen:
    out = open(log_file, "ab") if log_file else None  # noqa: SIM115 - lives as long as the child
    return subprocess.Popen(
        args,
        env=env,
        cwd=str(config.PROJECT_ROOT),
        stdout=out or None,
        stderr=subprocess.STDOUT if out else None,
        start_new_session=True,
    )


def stop(process: subprocess.Popen, *, timeout: float = 15.0) -> None:
    """SIGTERM the child's process group, then SIGKILL whatever is left after `timeout`."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    # Code servers spawned by Dagster may linger after their parent exits: clear the group.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _group_alive(process.pid):
        time.sleep(0.2)
    if _group_alive(process.pid):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def wait_until(check: Callable[[], bool], *, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except Exception:  # not up yet
            pass
        time.sleep(interval)
    return False


def http_ok(url: str) -> bool:
    return httpx.get(url, timeout=1.0).status_code < 500


def sigterm_exits() -> None:
    """Turn SIGTERM into SystemExit so `finally` blocks stop what we started (atexit does not
    run on a bare SIGTERM)."""

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
