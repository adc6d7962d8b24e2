"""A real Dagster webserver for tests that launch runs through GraphQL: `dagster-webserver` on a
free port, loading the real code location (workspace.yaml) from this session's test database,
with its run storage in a Postgres database of its own. No daemon runs, so launched runs stay
QUEUED (nothing executes). The same storage is open in the test process as a DagsterInstance,
for evaluating sensors and looking runs up."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg
import yaml

from flowpilot import config, processes
from orchestration.storage import storage_config

READY_TIMEOUT = 120.0

LOCATIONS = """
{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""
RELOAD = """
mutation Reload($location: String!) {
  reloadRepositoryLocation(repositoryLocationName: $location) {
    __typename
    ... on WorkspaceLocationEntry { loadStatus }
    ... on PythonError { message }
  }
}
"""


def pg_url(settings_dict: dict, name: str, *, driver: str = "postgresql") -> str:
    """A libpq URL for database `name` on the server of a Django connection's settings."""
    user = quote(settings_dict["USER"] or "")
    password = quote(settings_dict["PASSWORD"] or "")
    host, port = settings_dict["HOST"] or "", settings_dict["PORT"] or ""
    if host.startswith("/"):
        extra = f"&port={port}" if port else ""
        return f"{driver}://{user}:{password}@/{name}?host={quote(host, safe='/')}{extra}"
    return f"{driver}://{user}:{password}@{host or 'localhost'}:{port or 5432}/{name}"


def _admin(settings_dict: dict) -> psycopg.Connection:
    return psycopg.connect(pg_url(settings_dict, "postgres"), autocommit=True)


def create_database(settings_dict: dict, name: str) -> None:
    with _admin(settings_dict) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')


def drop_database(settings_dict: dict, name: str) -> None:
    with _admin(settings_dict) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class DagsterWebserver:
    url: str
    home: Path
    log: Path
    instance: object  # dagster.DagsterInstance on the webserver's run storage

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 60) -> dict:
        response = httpx.post(
            f"{self.url}/graphql",
            json={"query": query, "variables": variables or {}},
            timeout=timeout,
        )
        response.raise_for_status()
        body = response.json()
        assert not body.get("errors"), body
        return body["data"]

    def reload(self, location: str = config.CODE_LOCATION) -> None:
        """Reload the code location (after a publish: the job index is read at load)."""
        entry = self.graphql(RELOAD, {"location": location}, timeout=120)
        assert entry["reloadRepositoryLocation"].get("loadStatus") == "LOADED", entry

    def runs_tagged(self, key: str, value: str) -> list:
        from dagster import RunsFilter

        return list(self.instance.get_runs(RunsFilter(tags={key: value})))

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _loaded(server: DagsterWebserver) -> bool:
    entries = server.graphql(LOCATIONS, timeout=5)["workspaceOrError"]["locationEntries"]
    for entry in entries:
        error = entry["locationOrLoadError"] or {}
        if error.get("__typename") == "PythonError":
            raise AssertionError(f"code location failed to load: {error['message']}")
    return bool(entries) and all(e["loadStatus"] == "LOADED" for e in entries)


def start_webserver(settings_dict: dict, workdir: Path) -> Iterator[DagsterWebserver]:
    """Generator for a fixture: the webserver is up (code location loaded) when it yields and
    stopped, with its process group and its run-storage database, after."""
    from dagster import DagsterInstance

    # Not `<name>_dagster`: that is the session's storage (tests/orchestration/conftest.py),
    # which this fixture would drop from under the tests that use it after.
    dagster_db = f"{settings_dict['NAME']}_dagster_webserver"
    create_database(settings_dict, dagster_db)
    home = workdir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    storage_url = pg_url(settings_dict, dagster_db, driver="postgresql+psycopg2")
    (home / "dagster.yaml").write_text(
        yaml.safe_dump(
            {
                **storage_config(storage_url),
                "telemetry": {"enabled": False},
                "nux": {"enabled": False},
            }
        )
    )
    instance = DagsterInstance.from_config(str(home))  # creates the storage schema first
    port = _free_port()
    control_plane_url = pg_url(settings_dict, settings_dict["NAME"])
    env = dict(os.environ)
    for name in ("FLOWPILOT_CODE_SHARDS", "DAGSTER_URL", "FLOWPILOT_DAGSTER_URL"):
        env.pop(name, None)
    env.update(
        DAGSTER_HOME=str(home),
        DATABASE_URL=control_plane_url,
        DATABASE_OWNER_URL=control_plane_url,
        DAGSTER_PG_URL=storage_url,
        DJANGO_SETTINGS_MODULE="control_plane.settings.dev",
        FLOWPILOT_FAST_LAUNCH="0",
        PYTHONUNBUFFERED="1",
    )
    log = workdir / "webserver.log"
    process = processes.spawn(
        [
            processes.bin_path("dagster-webserver"),
            "-w",
            str(config.PROJECT_ROOT / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env,
        log_file=log,
    )
    server = DagsterWebserver(url=f"http://127.0.0.1:{port}", home=home, log=log, instance=instance)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if process.poll() is not None:
                raise AssertionError(f"dagster-webserver exited:\n{server.log_tail()}")
            try:
                if _loaded(server):
                    break
            except (httpx.HTTPError, KeyError, TypeError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"dagster-webserver not ready:\n{server.log_tail()}")
            time.sleep(0.5)
        yield server
    finally:
        processes.stop(process)
        instance.dispose()
        drop_database(settings_dict, dagster_db)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
