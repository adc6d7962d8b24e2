"""What the end-to-end tests share: a FLOWPILOT_HOME of their own with free ports, the `flowpilot`
command and its seed, the greeting workflow, waits on executions over HTTP, and `flowpilot_up`,
a whole system driven over HTTP that leaves no process behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from flowpilot.echo_server import EchoServer

FLOWPILOT = os.path.join(os.path.dirname(sys.executable), "flowpilot")
ORG = "demo"  # the organization `flowpilot seed` makes
UP_TIMEOUT = 240.0
RUN_TIMEOUT = 120.0
FINISHED = ("success", "failure", "canceled")

# Greets `name` through the echo server at `url`: report's output is "Hi {name} (200)".
GREET = {
    "inputs": {"name": {"type": "string"}, "url": {"type": "string"}},
    "steps": [
        {
            "id": "compose",
            "type": "transform.template",
            "config": {"template": "Hi {{ inputs.name }}"},
        },
        {
            "id": "send",
            "type": "http.request",
            "after": ["compose"],
            "config": {
                "url": "{{ inputs.url }}",
                "method": "POST",
                "json_body": {"text": "{{ steps.compose.output.result }}"},
            },
        },
        {
            "id": "report",
            "type": "transform.template",
            "after": ["send"],
            "config": {
                "template": "{{ steps.send.output.body.echo.text }}"
                " ({{ steps.send.output.status_code }})"
            },
        },
    ],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flowpilot_env(home: Path) -> dict[str, str]:
    """Environment for a whole FlowPilot installation of its own: home, database, ports."""
    env = dict(os.environ)
    for name in (
        "DATABASE_URL",
        "DAGSTER_PG_URL",
        "DATABASE_OWNER_URL",
        "DAGSTER_HOME",
        "DAGSTER_URL",
    ):
        env.pop(name, None)
    env.update(
        FLOWPILOT_HOME=str(home),
        FLOWPILOT_PORT=str(free_port()),
        FLOWPILOT_DAGSTER_PORT=str(free_port()),
        DJANGO_SETTINGS_MODULE="control_plane.settings.dev",
    )
    return env


def stop_database(env: dict[str, str]) -> None:
    """Stop the embedded Postgres of the installation `env` names, if it still runs."""
    from flowpilot import config, pg

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        pg.stop(config.load())
    finally:
        os.environ.clear()
        os.environ.update(saved)


def seed_token(env: dict[str, str]) -> str:
    """`flowpilot seed --json`: the API token of the demo organization's owner."""
    seed = json.loads(
        subprocess.run(
            [FLOWPILOT, "seed", "--json"], env=env, capture_output=True, text=True, check=True
        ).stdout
    )
    return seed["token"]


def start_up(env: dict[str, str], timeout: float = 180) -> subprocess.Popen:
    """`flowpilot up` in a session of its own (stop it with SIGINT to its group), once it says
    it is up; its output stays readable through `read_until`."""
    up = subprocess.Popen(
        [FLOWPILOT, "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        read_until(up, "FlowPilot is up", timeout=timeout)
    except BaseException:
        os.killpg(up.pid, signal.SIGKILL)
        up.wait()
        raise
    return up


def read_until(process: subprocess.Popen, marker: str, timeout: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    os.set_blocking(process.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line:
            lines.append(line.rstrip())
            if marker in line:
                return lines
        elif process.poll() is not None:
            break
        else:
            time.sleep(0.1)
    raise AssertionError(f"no {marker!r} within {timeout}s:\n" + "\n".join(lines[-40:]))


def wait_execution(client: httpx.Client, execution_id: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/executions/{execution_id}").json()
        if body["status"] in FINISHED:
            return body
        time.sleep(0.5)
    raise AssertionError(f"execution {execution_id} not finished in {timeout}s: {body}")


def wait_step_running(client: httpx.Client, execution_id: int, step: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = client.get(f"/api/v1/executions/{execution_id}").json()["steps"]
        if any(s["step_id"] == step and s["status"] == "running" for s in steps):
            return
        time.sleep(0.2)
    raise AssertionError(f"step {step} of execution {execution_id} not running in {timeout}s")


# -- a whole system --------------------------------------------------------------------------------


def _descendant_groups(pid: int) -> set[int]:
    """Process groups of every live descendant of `pid` (flowpilot up starts each child in a
    group of its own; these are what must be gone after it stops)."""
    children: dict[int, list[int]] = {}
    groups: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        child = int(entry.name)
        children.setdefault(int(fields[1]), []).append(child)
        groups[child] = int(fields[2])
    found: set[int] = set()
    todo = list(children.get(pid, []))
    while todo:
        current = todo.pop()
        found.add(groups[current])
        todo.extend(children.get(current, []))
    return found


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class System:
    env: dict[str, str]
    log: Path
    api: httpx.Client
    base: str
    dagster: str
    echo: EchoServer
    org_ids: dict[str, int] = field(default_factory=dict)

    def path(self, rest: str, org: str = ORG) -> str:
        return f"/api/v1/orgs/{org}/{rest.lstrip('/')}"

    def log_tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = httpx.post(
            f"{self.dagster}/graphql",
            json={"query": query, "variables": variables or {}},
            timeout=30,
        )
        response.raise_for_status()
        body = response.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def publish(self, name: str, definition: dict, org: str = ORG) -> dict:
        created = self.api.post(
            self.path("workflows", org), json={"name": name, "definition": definition}
        )
        assert created.status_code == 201, created.text
        workflow = created.json()
        published = self.api.post(self.path(f"workflows/{workflow['id']}/publish", org), json={})
        assert published.status_code == 201, published.text
        return workflow

    def trigger(self, workflow_id: int, body: dict, org: str = ORG) -> dict:
        made = self.api.post(self.path(f"workflows/{workflow_id}/triggers", org), json=body)
        assert made.status_code == 201, made.text
        return made.json()

    def execution(self, execution_id: int, org: str = ORG) -> dict:
        response = self.api.get(self.path(f"executions/{execution_id}", org))
        assert response.status_code == 200, response.text
        return response.json()

    def executions(self, workflow_id: int, org: str = ORG) -> list[dict]:
        response = self.api.get(
            self.path("executions", org), params={"workflow": workflow_id, "page_size": 100}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        return body["results"] if isinstance(body, dict) else body

    def wait_finished(
        self, execution_id: int, org: str = ORG, timeout: float = RUN_TIMEOUT
    ) -> dict:
        body: dict = {}

        def finished() -> bool:
            nonlocal body
            body = self.execution(execution_id, org)
            return body["status"] in FINISHED

        self.wait(finished, timeout, lambda: f"execution {execution_id} not finished: {body}")
        return body

    def wait(self, check: Callable[[], Any], timeout: float, what: Callable[[], str]) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.3)
        raise AssertionError(
            f"{what()} within {timeout:.0f}s\n--- flowpilot up:\n{self.log_tail()}"
        )

    def run_info(self, run_id: str) -> dict:
        query = """query Run($id: ID!) { runOrError(runId: $id) { __typename
            ... on Run { runId status jobName creationTime startTime endTime
            tags { key value } } } }"""
        return self.graphql(query, {"id": run_id})["runOrError"]


def _wait_for_log(log: Path, marker: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and marker in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.3)
    text = log.read_text(errors="replace") if log.exists() else ""
    raise AssertionError(
        f"no {marker!r} within {timeout:.0f}s:\n" + "\n".join(text.splitlines()[-60:])
    )


def _stop_up(up: subprocess.Popen, groups: set[int]) -> tuple[int | None, set[int]]:
    """Ctrl-C to `flowpilot up`; returns its exit code and the process groups it started that
    were still there 10 s after it exited, which are then stopped here (they are ours: recorded
    as its descendants while it ran)."""
    if up.poll() is None:
        os.killpg(up.pid, signal.SIGINT)
    try:
        code = up.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(up.pid, signal.SIGKILL)
        code = up.wait(timeout=10)
    deadline = time.monotonic() + 10
    left = {g for g in groups if g != up.pid and _group_alive(g)}
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = {g for g in left if _group_alive(g)}
    lingering = set(left)
    for pgid in left:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = {g for g in left if _group_alive(g)}
    for pgid in left:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    return code, lingering


@contextlib.contextmanager
def flowpilot_up(home: Path, timeout: float = UP_TIMEOUT) -> Iterator[System]:
    """`flowpilot up` on FLOWPILOT_HOME `home`, seeded, with an echo server; on the way out it
    is stopped with Ctrl-C and must exit 0 leaving no process group behind."""
    env = flowpilot_env(home)
    log = home.parent / "flowpilot-up.log"
    groups: set[int] = set()
    stop_watching = threading.Event()
    with open(log, "wb") as out:
        up = subprocess.Popen(
            [FLOWPILOT, "up"], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def watch() -> None:  # the children come and go (run workers): remember every group
        while not stop_watching.is_set() and up.poll() is None:
            groups.update(_descendant_groups(up.pid))
            stop_watching.wait(1.0)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    echo = EchoServer().start()
    try:
        _wait_for_log(log, "FlowPilot is up", up, timeout)
        base = f"http://127.0.0.1:{env['FLOWPILOT_PORT']}"
        api = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {seed_token(env)}"}, timeout=30
        )
        dagster = f"http://127.0.0.1:{env['FLOWPILOT_DAGSTER_PORT']}"
        yield System(env=env, log=log, api=api, base=base, dagster=dagster, echo=echo)
        api.close()
    finally:
        echo.stop()
        stop_watching.set()
        watcher.join(timeout=5)
        groups.update(_descendant_groups(up.pid))
        code, lingering = _stop_up(up, groups)
        stop_database(env)
        assert code == 0, f"flowpilot up exited {code}:\n" + log.read_text(errors="replace")[-4000:]
        assert not lingering, f"process groups {sorted(lingering)} outlived flowpilot up"
