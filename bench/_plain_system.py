"""Plain Dagster (bench/plain_dagster under `dagster dev`) as a system the trigger benchmarks
drive (bench/_systems.py has the measurement points)."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from _common import free_port
from _systems import (
    FINISHED_RUN,
    PLAIN_DB,
    PLAIN_DIR,
    UP_TIMEOUT,
    DagsterStorage,
    ProcessWatch,
    System,
    Trigger,
    _wait,
    _workspace_jobs,
)

LAUNCH = """mutation Launch($params: ExecutionParams!) { launchRun(executionParams: $params) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""


class PlainDagster(System):
    """bench/plain_dagster under `dagster dev`; `mode` "sensor" (a row insert) or "graphql"
    (launchRun) chooses what `send` does."""

    def __init__(self, cfg: Any, log_dir: Path) -> None:
        from flowpilot import config

        self.cfg = cfg
        self.log = log_dir / "plain-dagster.log"
        self.home = cfg.home / "plain_dagster"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.pg_url = config.embedded_url(
            cfg.pg_dir, PLAIN_DB, config.OWNER_ROLE, driver="postgresql+psycopg2"
        )
        self.libpq_url = config.embedded_url(cfg.pg_dir, PLAIN_DB, config.OWNER_ROLE)
        self.process: subprocess.Popen | None = None
        self.mode = "sensor"

    @property
    def label(self) -> str:  # type: ignore[override]
        if self.mode == "sensor":
            return "Dagster sensor (30 s)"
        return "Dagster GraphQL launchRun"

    def _create_database(self) -> None:
        import psycopg

        from flowpilot import config

        admin = config.embedded_url(self.cfg.pg_dir, "postgres", config.OWNER_ROLE)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {PLAIN_DB} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {PLAIN_DB}")
        self.rows = psycopg.connect(self.libpq_url, autocommit=True)
        self.rows.execute(
            "CREATE TABLE bench_trigger (id bigserial PRIMARY KEY, payload jsonb NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT now())"
        )

    def __enter__(self) -> PlainDagster:
        import httpx

        from flowpilot import pg, processes

        self._create_database()
        if self.home.exists():
            shutil.rmtree(self.home)
        self.home.mkdir(parents=True)
        shutil.copyfile(PLAIN_DIR / "dagster.yaml", self.home / "dagster.yaml")
        env = dict(os.environ)
        for name in ("DAGSTER_PG_URL", "DATABASE_URL", "DATABASE_OWNER_URL", "DAGSTER_URL"):
            env.pop(name, None)
        env.update(
            DAGSTER_HOME=str(self.home),
            PLAIN_DAGSTER_PG_URL=self.pg_url,
            PLAIN_TRIGGER_DB_URL=self.libpq_url,
            PYTHONUNBUFFERED="1",
        )
        args = [
            processes.bin_path("dagster"),
            "dev",
            "-f",
            str(PLAIN_DIR / "definitions.py"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
        ]
        self.process = processes.spawn(args, env, log_file=self.log)
        self.watch = ProcessWatch(
            {"system": self.process.pid, "postgres": pg.server_pid(self.cfg.pg_dir) or -1}
        ).start()
        try:
            _wait(
                lambda: "trivial_job" in _workspace_jobs(self.url),
                UP_TIMEOUT,
                f"plain Dagster up with trivial_job (see {self.log})",
                self.process,
            )
            self.client = httpx.Client(timeout=60)
            self.storage = DagsterStorage(self.pg_url)
            query = """{ repositoriesOrError { ... on RepositoryConnection {
                nodes { name location { name } } } } }"""
            repo = self.client.post(f"{self.url}/graphql", json={"query": query}).json()
            node = repo["data"]["repositoriesOrError"]["nodes"][0]
            self.selector = {
                "repositoryLocationName": node["location"]["name"],
                "repositoryName": node["name"],
                "jobName": "trivial_job",
            }
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close("client", "storage", "rows")

    def send(self, index: int) -> Trigger:
        from psycopg.types.json import Jsonb

        t0 = time.time()
        if self.mode == "sensor":
            (key,) = self.rows.execute(
                "INSERT INTO bench_trigger (payload) VALUES (%s) RETURNING id",
                [Jsonb({"n": index})],
            ).fetchone()
            return Trigger(index, t0, time.time() - t0, str(key))
        response = self.client.post(
            f"{self.url}/graphql",
            json={"query": LAUNCH, "variables": {"params": {"selector": self.selector}}},
        )
        answer = time.time() - t0
        result = response.json()["data"]["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            raise SystemExit(f"launchRun answered {result}")
        run_id = result["run"]["runId"]
        return Trigger(index, t0, answer, run_id, run_id=run_id)

    def resolve(self, triggers: list[Trigger]) -> None:
        unknown = [t for t in triggers if not t.run_id]
        if unknown:
            from plain_dagster.definitions import ROW_TAG

            runs = self.storage.runs_by_tag(ROW_TAG, [t.key for t in unknown])
            for trigger in unknown:
                trigger.run_id = runs.get(trigger.key)
        self._fill_times(triggers)
        for trigger in triggers:
            trigger.complete = trigger.status in FINISHED_RUN and not math.isnan(trigger.finished)

    def backlog(self) -> dict[str, int]:
        from plain_dagster.definitions import ROW_TAG

        (rows,) = self.rows.execute("SELECT count(*) FROM bench_trigger").fetchone()
        (requested,) = self.storage.conn.execute(
            "SELECT count(*) FROM run_tags WHERE key = %s", [ROW_TAG]
        ).fetchone()
        counts = self.storage.status_counts()
        return {
            "rows without a run": rows - requested,
            "runs queued": counts.get("QUEUED", 0),
            "runs starting/started": counts.get("STARTING", 0) + counts.get("STARTED", 0),
        }
