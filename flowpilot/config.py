"""Runtime configuration read from the environment, in one place.

Django settings, the Dagster code location, the CLI and the tests all read paths and URLs from
here, so every process that belongs to one FlowPilot installation agrees on them.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

APP_ROLE = "flowpilot_app"
OWNER_ROLE = "postgres"
CONTROL_PLANE_DB = "flowpilot"
DAGSTER_DB = "flowpilot_dagster"
CODE_LOCATION = "flowpilot"

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, "").strip() or default


@dataclass(frozen=True)
class Config:
    home: Path
    database_url: str
    database_owner_url: str
    dagster_pg_url: str
    embedded: bool
    host: str
    port: int
    dagster_host: str
    dagster_port: int
    code_shards: int = 1  # FLOWPILOT_CODE_SHARDS: Dagster code locations (flowpilot/shards.py)
    # FLOWPILOT_CODE_SERVER: "flowpilot" (orchestration/code_server.py, reloads in place) or
    # "dagster" (`dagster dev`'s own code servers, a new process per reload) under `flowpilot up`
    code_server: str = "flowpilot"
    # FLOWPILOT_SNAPSHOT_CACHE: where code servers keep job snapshots (orchestration/
    # job_snapshots.py); "off": in memory only
    snapshot_cache: Path | None = None

    @property
    def pg_dir(self) -> Path:
        return self.home / "pg"

    @property
    def dagster_home(self) -> Path:
        return Path(_env("DAGSTER_HOME", str(self.home / "dagster")))

    @property
    def control_plane_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def dagster_url(self) -> str:
        return _env("DAGSTER_URL", f"http://{self.dagster_host}:{self.dagster_port}")


def socket_dir(pg_dir: Path) -> Path:
    """Where the embedded server puts its Unix socket: its data dir, unless that path is too
    long for a socket name (about 107 bytes on Linux), then a fixed directory under /tmp."""
    if len(str(pg_dir / ".s.PGSQL.5432")) <= 100:
        return pg_dir
    digest = hashlib.sha256(str(pg_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"flowpilot-pg-{digest}"


def code_server_socket(cfg: Config, location: str) -> Path:
    """The Unix socket `flowpilot up` gives the code server of `location`: under DAGSTER_HOME,
    unless that path is too long for a socket name, then a fixed directory under /tmp (as for
    the embedded Postgres). A socket, unlike a probed free TCP port, cannot be taken by another
    process between choosing it and binding it."""
    directory = cfg.dagster_home / "code-servers"
    if len(str(directory / f"{location}.sock")) > 100:
        digest = hashlib.sha256(str(directory).encode()).hexdigest()[:12]
        directory = Path(tempfile.gettempdir()) / f"flowpilot-code-{digest}"
    return directory / f"{location}.sock"


def embedded_url(pg_dir: Path, database: str, role: str, *, driver: str = "postgresql") -> str:
    """A libpq URL for the embedded server, which listens only on a Unix socket."""
    return f"{driver}://{role}:@/{database}?host={quote(str(socket_dir(pg_dir)), safe='/')}"


def load() -> Config:
    home = Path(_env("FLOWPILOT_HOME", str(PROJECT_ROOT / ".flowpilot"))).resolve()
    pg_dir = home / "pg"
    database_url = _env("DATABASE_URL")
    dagster_pg_url = _env("DAGSTER_PG_URL")
    embedded = not (database_url and dagster_pg_url)
    owner_url = _env("DATABASE_OWNER_URL") or database_url
    if not database_url:
        owner_url = owner_url or embedded_url(pg_dir, CONTROL_PLANE_DB, OWNER_ROLE)
        database_url = embedded_url(pg_dir, CONTROL_PLANE_DB, APP_ROLE)
    if not dagster_pg_url:
        # psycopg2 scheme: with SQLAlchemy 2.1 the bare scheme maps to psycopg 3, which breaks
        # Dagster's NOTIFY statements (STACK-NOTES).
        dagster_pg_url = embedded_url(pg_dir, DAGSTER_DB, OWNER_ROLE, driver="postgresql+psycopg2")
    return Config(
        home=home,
        database_url=database_url,
        database_owner_url=owner_url,
        dagster_pg_url=dagster_pg_url,
        embedded=embedded,
        host=_env("FLOWPILOT_HOST", "127.0.0.1"),
        port=int(_env("FLOWPILOT_PORT", "8000")),
        dagster_host=_env("FLOWPILOT_DAGSTER_HOST", "127.0.0.1"),
        dagster_port=int(_env("FLOWPILOT_DAGSTER_PORT", "3000")),
        code_shards=_code_shards(),
        code_server=_code_server(),
        snapshot_cache=_snapshot_cache(home),
    )


def _snapshot_cache(home: Path) -> Path | None:
    raw = _env("FLOWPILOT_SNAPSHOT_CACHE", str(home / "job-snapshots"))
    return None if raw.lower() == "off" else Path(raw).resolve()


def _code_server() -> str:
    raw = _env("FLOWPILOT_CODE_SERVER", "flowpilot")
    if raw not in ("flowpilot", "dagster"):
        raise ValueError(f"FLOWPILOT_CODE_SERVER must be 'flowpilot' or 'dagster', not {raw!r}")
    return raw


def _code_shards() -> int:
    raw = _env("FLOWPILOT_CODE_SHARDS", "1")
    if not raw.isdecimal() or not 1 <= int(raw) <= 64:
        raise ValueError(f"FLOWPILOT_CODE_SHARDS must be a whole number from 1 to 64, not {raw!r}")
    return int(raw)
