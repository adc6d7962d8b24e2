"""The warm run worker: a "zygote" process that has imported Dagster, dagster-postgres, Django
and the code location's modules once, and forks one child per run ("fork after import").

The zygote is started by `orchestration.run_launcher.WarmRunLauncher` as
`python -m orchestration.warm_worker '<json spec>'` and talks to it over its stdin/stdout, one
JSON object a line:

    launcher -> zygote   {"op": "fork", "run_id": ..., "instance_ref": <serialized InstanceRef>}
                         {"op": "retire"}   exit once the running children are done
                         end of input       the launcher is gone: stop the children, exit
    zygote -> launcher   {"ready": true, "pid": ..., "seconds": ...} once, or {"error": ...}
                         {"pid": ..., "start": ...} per fork, or {"error": ...}, or
                         {"stale": true} when a project file changed since the preload

At fork time the zygote holds no database connection and runs no thread besides its main one
(checked before every fork): the child opens its own connections. The zygote builds the
DagsterInstance of each instance ref once, before its first fork (dagster-postgres storages hold
no connection between calls), so a child does not pay for loading it again; the child switches
the instance's storages to a small connection pool (what the webserver does), since a run makes
dozens of storage calls and a new connection for each costs more than the call. The child does what
`dagster api execute_run` does (`dagster._cli.api._execute_run_command_body`: load the instance,
reconstruct the job from the run's origin, `core_execute_run`), so the run is an ordinary Dagster
run; the code location module is imported in the child, so a workflow published after the
zygote started is found, and the lazy repository renders only the run's job. When the run has
ended, the child closes the FlowPilot execution at once (the run-status sensors stay as the
safety net).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import logging
import os
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WORKER_TAG = "flowpilot/run_worker"
DEFAULT_SETTINGS_MODULE = "control_plane.settings.dev"
# Imported in the zygote besides the code location module's own top-level imports.
DEFAULT_PRELOAD = (
    "dagster",
    "dagster_postgres",
    "dagster._cli.api",
    "dagster._core.execution.api",
    "orchestration.repository",
    "resources.control_plane",
    "sensors.execution_status",
)
POLL_SECONDS = 0.2
# Connections a worker may open beyond its pooled one: the run, its cancellation thread and the
# fast-path launches of the workflows its end starts.
WORKER_POOL_OVERFLOW = 8


# -- process identity (shared with the launcher) ---------------------------------------------


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid from
    the worker; None where /proc is not available."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def process_alive(pid: int, start: int | None) -> bool:
    """True while `pid` runs and is the same process (same start time); a zombie is dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return False
    return start is None or int(fields[19]) == start


# -- line protocol ----------------------------------------------------------------------------


class LineReader:
    """JSON lines from a file descriptor, with a timeout (select) and no buffering surprises."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = b""
        self.closed = False

    def _pop_line(self) -> dict[str, Any] | None:
        if b"\n" not in self._buffer:
            return None
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def read(self, timeout: float | None) -> dict[str, Any] | None:
        """The next message; None on timeout or end of input (then `closed` is set)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            message = self._pop_line()
            if message is not None:
                return message
            if self.closed:
                return None
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.closed = True
                continue
            self._buffer += chunk


def send(fd: int, message: dict[str, Any]) -> None:
    data = (json.dumps(message) + "\n").encode()
    while data:
        data = data[os.write(fd, data) :]


# -- preloading -------------------------------------------------------------------------------


def location_imports(module_name: str) -> Iterator[str]:
    """The modules a code location module imports at top level, found without running it (it
    reads the database when imported, so the zygote must not import it)."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return
    tree = ast.parse(Path(spec.origin).read_text(), spec.origin)
    for node in tree.body:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                try:
                    if importlib.util.find_spec(candidate) is not None:
                        yield candidate
                except (ImportError, ValueError):
                    continue


def preload(spec: dict[str, Any]) -> list[str]:
    """Import everything a run worker needs, set Django up, and leave no connection open."""
    working_directory = spec.get("working_directory")
    if working_directory and working_directory not in sys.path:
        sys.path.insert(0, working_directory)
    names = list(dict.fromkeys(spec.get("preload", DEFAULT_PRELOAD)))
    code_module = spec.get("code_module")
    if code_module:
        names += [n for n in location_imports(code_module) if n != code_module and n not in names]
    # Dagster first: its imports log (alembic) before Django's logging is configured.
    for name in [n for n in names if n.split(".")[0].startswith("dagster")]:
        importlib.import_module(name)
    settings_module = spec.get("settings_module") or DEFAULT_SETTINGS_MODULE
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", settings_module)
    from resources.django_setup import ensure_django

    ensure_django(settings_module)
    for name in names:
        importlib.import_module(name)
    _drop_connections()
    return names


def project_sources(root: str | None) -> dict[str, int]:
    """Modification times of the loaded modules under the code location's working directory
    (not installed packages): an edited file makes the zygote stale."""
    if not root:
        return {}
    prefix = os.path.realpath(root) + os.sep
    sources = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path or "site-packages" in path:
            continue
        real = os.path.realpath(path)
        if real.startswith(prefix):
            try:
                sources[real] = os.stat(real).st_mtime_ns
            except OSError:
                continue
    return sources


def _drop_connections() -> None:
    from django.db import connections

    connections.close_all()


def fork_hazards() -> list[str]:
    """What would make a fork unsafe: other threads, open database connections."""
    hazards = [
        f"thread {t.name!r} is running"
        for t in threading.enumerate()
        if t is not threading.main_thread()
    ]
    from django.db import connections

    hazards += [
        f"database connection {c.alias!r} is open"
        for c in connections.all(initialized_only=True)
        if c.connection is not None
    ]
    return hazards


# -- the child: one run -----------------------------------------------------------------------


def close_execution(instance: Any, run_id: str, settings_module: str) -> None:
    """Finish the FlowPilot execution of a run that has ended, with the run's final status and
    the message the failure sensor would write. Idempotent: the sensors may do it again."""
    from dagster._core.events import DagsterEventType, EngineEventData
    from dagster._core.storage.dagster_run import DagsterRunStatus
    from dagster._utils.error import serializable_error_info_from_exc_info

    from orchestration.rendering import TAG_ORG
    from resources.control_plane import ControlPlaneResource
    from sensors.execution_status import run_failure_message

    run = instance.get_run_by_id(run_id)
    if run is None or not run.is_finished or TAG_ORG not in run.tags:
        return
    error = ""
    if run.status == DagsterRunStatus.SUCCESS:
        status = "SUCCESS"
    elif run.status == DagsterRunStatus.CANCELED:
        status, error = "CANCELED", "canceled"
    else:
        status = "FAILURE"
        steps = instance.get_records_for_run(
            run_id=run_id, of_type=DagsterEventType.STEP_FAILURE
        ).records
        failures = instance.get_records_for_run(
            run_id=run_id, of_type=DagsterEventType.RUN_FAILURE, ascending=False, limit=1
        ).records
        error = run_failure_message(
            [r.event_log_entry.dagster_event for r in steps],
            failures[0].event_log_entry.dagster_event if failures else None,
        )
    try:
        ControlPlaneResource(settings_module=settings_module).execution_finished(
            run_id=run_id, run_status=status, error=error, tags=dict(run.tags)
        )
    except Exception:
        instance.report_engine_event(
            "Closing the FlowPilot execution from the run worker failed; the run-status "
            "sensor will close it.",
            run,
            EngineEventData.engine_error(serializable_error_info_from_exc_info(sys.exc_info())),
        )
    # Closing the execution may have started workflows subscribed to it finishing; their
    # fast-path launches run in this process's thread pool and must go out before the process
    # exits (else they wait for the sensor's stale sweep).
    from django.conf import settings

    from control_plane.executions.launch import fast_launch_wait

    fast_launch_wait(timeout=2 * settings.DAGSTER_TIMEOUT_SECONDS + 1)


def load_instance(serialized_ref: str) -> Any:
    """The DagsterInstance of a serialized InstanceRef."""
    from dagster._core.instance import DagsterInstance, InstanceRef
    from dagster._serdes import deserialize_value

    return DagsterInstance.from_ref(deserialize_value(serialized_ref, InstanceRef))


@contextmanager
def worker_instance(request: dict[str, Any], prepared: Any | None) -> Iterator[Any]:
    """The run's instance, as `dagster api execute_run` gets it (with a local .env applied), on
    pooled connections; `prepared` is the zygote's instance for this ref, if it has one."""
    from dagster._cli.utils import _inject_local_env_file

    with _inject_local_env_file(log):
        instance = prepared if prepared is not None else load_instance(request["instance_ref"])
        with instance:
            instance.optimize_for_webserver(
                statement_timeout=0, pool_recycle=3600, max_overflow=WORKER_POOL_OVERFLOW
            )
            yield instance


def run_child(request: dict[str, Any], settings_module: str, prepared: Any | None = None) -> int:
    """Execute one run in this (forked) process, as `dagster api execute_run` does."""
    from dagster._cli.api import _execute_run_command_body
    from dagster._core.execution.run_cancellation_thread import start_run_cancellation_thread
    from dagster._core.storage.dagster_run import DagsterRunStatus
    from dagster._utils.interrupts import capture_interrupts

    run_id = request["run_id"]
    with capture_interrupts(), worker_instance(request, prepared) as instance:
        # Written here, before the run's own status events, so terminate and the run monitor
        # find this process (host, pid and start time guard against a reused pid).
        instance.add_run_tags(
            run_id,
            {
                WORKER_TAG: json.dumps(
                    {
                        "host": request["host"],
                        "pid": os.getpid(),
                        "start": process_start(os.getpid()),
                        "zygote": os.getppid(),
                        "watch": bool(request.get("watch")),
                    }
                )
            },
        )
        # A terminate from another host (the webserver in its own container) cannot signal this
        # process: Dagster's cancellation thread sees the run CANCELING and interrupts it.
        watcher = start_run_cancellation_thread(instance, run_id) if request.get("watch") else None
        try:
            run = instance.get_run_by_id(run_id)
            if run is not None and run.status == DagsterRunStatus.CANCELING:
                # Terminated while this worker started: Dagster's run worker would ignore the
                # run and leave it to the monitor's cancel timeout; end it now instead.
                instance.report_run_canceled(run, message="Canceled before its run worker started.")
            else:
                _execute_run_command_body(
                    run_id, instance, lambda _event: None, set_exit_code_on_failure=False
                )
                run = instance.get_run_by_id(run_id)
                if run is not None and run.status == DagsterRunStatus.CANCELING:
                    # Terminated between the check above and Dagster's own read of the run,
                    # which then ignores it as a duplicate worker: end it here too.
                    instance.report_run_canceled(
                        run, message="Canceled while its run worker started."
                    )
            close_execution(instance, run_id, settings_module)
        finally:
            if watcher is not None:
                watcher[1].set()
                watcher[0].join(timeout=15)
            _drop_connections()
    return 0


# -- the zygote -------------------------------------------------------------------------------


class Zygote:
    def __init__(self, reader: LineReader, out_fd: int, spec: dict[str, Any]) -> None:
        self.reader = reader
        self.out_fd = out_fd
        self.settings_module = spec.get("settings_module") or DEFAULT_SETTINGS_MODULE
        self.stop_grace_seconds = float(spec.get("stop_grace_seconds", 10))
        self.children: dict[int, str] = {}
        self.sources = project_sources(spec.get("working_directory"))
        self.stopping = False
        self.retiring = False
        self.instances: dict[str, Any] = {}  # serialized InstanceRef -> DagsterInstance

    def instance_for(self, serialized_ref: str) -> Any | None:
        """The instance of a ref, built here once; None if that fails (the child then builds
        it and reports the error in the run, as `dagster api execute_run` would)."""
        if serialized_ref not in self.instances:
            try:
                self.instances[serialized_ref] = load_instance(serialized_ref)
            except Exception:
                log.exception("loading the Dagster instance in the zygote failed")
                return None
        return self.instances[serialized_ref]

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stopping = True

    def serve(self) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        while not self.stopping and not (self.retiring and not self.children):
            self.reap()
            message = self.reader.read(POLL_SECONDS)
            if message is not None:
                self.handle(message)
            elif self.reader.closed:
                break  # the launcher is gone
        self.stop_children()
        return 0

    def handle(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "fork":
            if self.stale():
                # Code changed since the preload: a fork would run the old code.
                send(self.out_fd, {"stale": True})
                return
            try:
                pid = self.fork(message)
            except Exception as exc:
                send(self.out_fd, {"error": f"{type(exc).__name__}: {exc}"})
            else:
                send(self.out_fd, {"pid": pid, "start": process_start(pid)})
        elif op == "retire":
            self.retiring = True
        else:
            send(self.out_fd, {"error": f"unknown request {op!r}"})

    def stale(self) -> bool:
        for path, mtime in self.sources.items():
            try:
                if os.stat(path).st_mtime_ns != mtime:
                    return True
            except OSError:
                return True
        return False

    def fork(self, request: dict[str, Any]) -> int:
        prepared = self.instance_for(request["instance_ref"])
        hazards = fork_hazards()
        if hazards:
            raise RuntimeError("the zygote is not safe to fork: " + "; ".join(hazards))
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                os.close(self.reader.fd)
                os.close(self.out_fd)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                code = run_child(request, self.settings_module, prepared)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.children[pid] = request["run_id"]
        return pid

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            run_id = self.children.pop(pid, None)
            if os.WIFSIGNALED(status):
                log.warning(
                    "warm run worker %s (run %s) killed by signal %s",
                    pid,
                    run_id,
                    os.WTERMSIG(status),
                )

    def stop_children(self) -> None:
        """Interrupt the running children (Dagster's interrupt handling ends their runs), give
        them `stop_grace_seconds`, then kill what is left: no worker outlives its zygote."""
        for pid in list(self.children):
            _signal(pid, signal.SIGINT)
        deadline = time.monotonic() + self.stop_grace_seconds
        while self.children and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.05)
        for pid in list(self.children):
            _signal(pid, signal.SIGKILL)
        while self.children:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self.reap()


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _protocol_fds() -> tuple[int, int]:
    """Keep the launcher's pipes for the protocol; stdin becomes /dev/null and stdout goes to
    stderr, so nothing a run prints can corrupt a message."""
    in_fd, out_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return in_fd, out_fd


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    spec = json.loads(argv[1])
    in_fd, out_fd = _protocol_fds()
    started = time.monotonic()
    try:
        preloaded = preload(spec)
        hazards = fork_hazards()
        if hazards:
            raise RuntimeError(
                "after preloading, the zygote is not safe to fork: " + "; ".join(hazards)
            )
    except BaseException:
        send(out_fd, {"error": traceback.format_exc()})
        return 1
    send(
        out_fd,
        {
            "ready": True,
            "pid": os.getpid(),
            "seconds": round(time.monotonic() - started, 3),
            "preloaded": preloaded,
        },
    )
    return Zygote(LineReader(in_fd), out_fd, spec).serve()


if __name__ == "__main__":
    sys.exit(main())
