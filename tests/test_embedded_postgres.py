"""The embedded server: shared by processes, stoppable after a crash, an app role
without BYPASSRLS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psycopg
import pytest

from flowpilot import config, pg


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWPILOT_HOME", str(tmp_path / "fp"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    cfg = config.load()
    yield cfg
    pg.stop(cfg)


def cli(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flowpilot.cli", *args],
        capture_output=True,
        text=True,
        env=env or os.environ.copy(),
        timeout=120,
    )


def test_start_is_idempotent_and_creates_databases_and_roles(home):
    assert pg.start(home) is True
    assert pg.start(home) is False
    with psycopg.connect(home.database_url) as conn:
        user, databases = conn.execute(
            "SELECT current_user, (SELECT array_agg(datname::text) FROM pg_database)"
        ).fetchone()
        role = conn.execute(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    assert user == config.APP_ROLE
    assert role == (False, False)  # requests can never bypass row-level security
    assert {"flowpilot", "flowpilot_dagster"} <= set(databases)
    with psycopg.connect(home.database_owner_url) as conn:
        assert conn.execute("SELECT extversion FROM pg_extension WHERE extname='vector'").fetchone()


def test_another_process_finds_the_same_server(home):
    pg.start(home)
    code = (
        "from flowpilot import config, pg; import psycopg; c = config.load(); "
        "print(pg.is_running(c), psycopg.connect(c.database_url).execute('select 1').fetchone()[0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy()
    )
    assert out.stdout.split() == ["True", "1"], out.stderr


def test_db_stop_works_after_the_starter_crashed(home):
    script = textwrap.dedent(
        """
        import time
        from flowpilot import pg
        pg.start()
        print("up", flush=True)
        time.sleep(60)
        """
    )
    starter = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    assert starter.stdout.readline().strip() == "up"
    starter.send_signal(signal.SIGKILL)
    starter.wait()
    assert pg.is_running(home)  # the crash left it running...
    result = cli("db", "stop")
    assert result.stdout.strip() == "stopped", result.stderr
    assert not pg.is_running(home)  # ...and `flowpilot db stop` stopped it
    assert cli("db", "status").returncode == 3


def test_db_url_and_start_commands(home):
    assert cli("db", "url").stdout.strip() == home.database_url
    assert "started" in cli("db", "start").stdout
    assert "already running" in cli("db", "start").stdout
    assert "running (pid" in cli("db", "status").stdout


def test_external_urls_mean_no_embedded_server(monkeypatch, tmp_path):
    monkeypatch.setenv("FLOWPILOT_HOME", str(tmp_path / "ext"))
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@db.example/flowpilot")
    monkeypatch.setenv("DAGSTER_PG_URL", "postgresql+psycopg2://dagster@db.example/dagster")
    cfg = config.load()
    assert not cfg.embedded
    with pytest.raises(RuntimeError):
        pg.start(cfg)
    assert cli("db", "start").returncode == 2
    assert not (tmp_path / "ext" / "pg").exists()


def test_long_home_paths_use_a_short_socket_dir(tmp_path):
    deep = tmp_path / ("x" * 60) / ("y" * 60) / "pg"
    sock = config.socket_dir(deep)
    assert sock != deep and len(str(sock / ".s.PGSQL.5432")) < 100
    assert config.socket_dir(deep) == sock  # deterministic: every process finds the same one
