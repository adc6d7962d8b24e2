"""A Dagster run launcher with warm, pre-imported run workers.

Dagster's default launcher asks the code server to start a fresh process per run, which pays
for Python, `import dagster`, Django's set-up and the code location's imports before the first
step (bench/run_start.py). `WarmRunLauncher` keeps one pre-started "zygote" process per code
location (orchestration/warm_worker.py) that has done all of that once, and forks it for each
run; the child executes the run exactly as `dagster api execute_run` does, so runs stay
ordinary Dagster runs (event log, UI, re-execution, run monitoring).

- The pool lives in each process that launches runs and starts with its first launch: the
  daemon (its run queue, sensors and schedules) and the webserver (runs it launches directly,
  see orchestration/run_coordinator.py). `ready_for` tells the coordinator whether a warm worker
  is up here; if not, one starts in the background and that run goes through the queue.
  Terminate signals the pid in the run's `flowpilot/run_worker` tag, whichever process forked
  it. Zygotes are started from a clean interpreter, never forked from the launching process
  (which has threads and connections).
- A zygote that died is replaced at the next launch; a code location whose origin changed
  (interpreter, working directory, module) gets a new zygote and the old one retires once its
  runs are done.
- When no worker can be started the launch raises: Dagster writes the error to the run's event
  log and marks the run failed (its own handling of a failed launch), never a silent loss.
- On `dispose` (the instance closes: the daemon stops) and at exit, zygotes are stopped; each
  interrupts its running children, waits `stop_grace_seconds`, then kills them. A zygote also
  stops when its launcher process disappears (its stdin closes). Zygotes and workers stay in
  the launching process's process group.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from dagster import Array, Bool, Field, Float, StringSource
from dagster import _check as check
from dagster._core.errors import DagsterLaunchFailedError
from dagster._core.launcher.base import (
    CheckRunHealthResult,
    LaunchRunContext,
    RunLauncher,
    WorkerStatus,
)
from dagster._core.origin import JobPythonOrigin
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
from dagster._serdes import ConfigurableClass, ConfigurableClassData, serialize_value

from orchestration.warm_worker import (
    DEFAULT_PRELOAD,
    DEFAULT_SETTINGS_MODULE,
    WORKER_TAG,
    LineReader,
    process_alive,
    send,
)

log = logging.getLogger(__name__)

DEFAULT_START_TIMEOUT = 120.0
DEFAULT_STOP_GRACE = 10.0
DEFAULT_TERMINATE_WAIT = 5.0
FORK_TIMEOUT = 30.0


class WarmWorkerUnavailable(Exception):
    """No warm worker could be started for a run."""


class ZygoteKey(NamedTuple):
    """One zygote per code location and the way its code is loaded."""

    location_name: str
    executable_path: str
    working_directory: str
    code_module: str


def zygote_key(run: DagsterRun) -> ZygoteKey:
    origin = check.not_none(run.job_code_origin, f"run {run.run_id} has no job code origin")
    check.inst(origin, JobPythonOrigin)
    repository = origin.repository_origin
    pointer = repository.code_pointer
    location = (
        run.remote_job_origin.location_name
        if run.remote_job_origin
        else repository.code_pointer.describe()
    )
    return ZygoteKey(
        location_name=location,
        executable_path=repository.executable_path or sys.executable,
        working_directory=getattr(pointer, "working_directory", None) or os.getcwd(),
        # A module pointer's imports are preloaded (a python_file pointer's are not).
        code_module=getattr(pointer, "module", None) or "",
    )


def worker_info(run: DagsterRun) -> dict[str, Any] | None:
    raw = run.tags.get(WORKER_TAG)
    if not raw:
        return None
    try:
        info = json.loads(raw)
    except ValueError:
        return None
    return info if isinstance(info, dict) and "pid" in info else None


class Zygote:
    """The launcher's handle on one zygote process."""

    def __init__(self, key: ZygoteKey, spec: Mapping[str, Any], start_timeout: float) -> None:
        self.key = key
        self._lock = threading.Lock()
        started = time.monotonic()
        self.process = subprocess.Popen(
            [key.executable_path, "-m", "orchestration.warm_worker", json.dumps(dict(spec))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=key.working_directory,
            close_fds=True,
        )
        self._reader = LineReader(self.process.stdout.fileno())
        ready = self._reader.read(start_timeout)
        if not ready or not ready.get("ready"):
            self.kill()
            detail = (ready or {}).get("error") or (
                f"no answer within {start_timeout:.0f}s"
                if not self._reader.closed
                else f"it exited with code {self.process.poll()}"
            )
            raise WarmWorkerUnavailable(
                f"the zygote for {key.location_name!r} did not start: {detail}"
            )
        self.pid = self.process.pid
        log.info(
            "zygote %s for %s ready in %.2fs",
            self.pid,
            key.location_name,
            time.monotonic() - started,
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def fork(self, request: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            try:
                send(self.process.stdin.fileno(), {"op": "fork", **request})
            except OSError as exc:
                raise WarmWorkerUnavailable(f"zygote {self.pid} is gone ({exc})") from exc
            reply = self._reader.read(FORK_TIMEOUT)
        if reply is None:
            self.kill()
            state = "exited" if self._reader.closed else f"did not answer in {FORK_TIMEOUT:.0f}s"
            raise WarmWorkerUnavailable(f"zygote {self.pid} {state}")
        if "error" in reply:
            raise WarmWorkerUnavailable(f"zygote {self.pid} could not fork: {reply['error']}")
        return reply

    def retire(self) -> None:
        with self._lock:
            try:
                send(self.process.stdin.fileno(), {"op": "retire"})
            except OSError:
                pass

    def stop(self, timeout: float) -> None:
        """End of input: the zygote interrupts its children, waits for them, and exits."""
        if self.process.stdin and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream and not stream.closed:
                stream.close()


class ZygotePool:
    """Zygotes by code location, owned by one process (the one that launches runs)."""

    def __init__(self, spec: Mapping[str, Any], start_timeout: float, stop_grace: float) -> None:
        self._spec = dict(spec)
        self._start_timeout = start_timeout
        self._stop_grace = stop_grace
        self._lock = threading.Lock()
        self._zygotes: dict[str, Zygote] = {}
        self._retired: list[Zygote] = []
        self._workers: dict[int, int | None] = {}  # pid -> start, to stop any orphan at the end
        self._warming: set[str] = set()
        self._warming_lock = threading.Lock()
        self.owner_pid = os.getpid()

    def has_warm(self, key: ZygoteKey) -> bool:
        """A live zygote for exactly this code location (no lock: never waits for a start)."""
        zygote = self._zygotes.get(key.location_name)
        return zygote is not None and zygote.key == key and zygote.alive()

    def warm_in_background(self, key: ZygoteKey) -> None:
        """Start the code location's zygote in a thread, once at a time."""
        with self._warming_lock:
            if key.location_name in self._warming:
                return
            self._warming.add(key.location_name)

        def start() -> None:
            try:
                self._zygote(key)
            except WarmWorkerUnavailable:
                log.exception("warming a worker for %s failed", key.location_name)
            finally:
                with self._warming_lock:
                    self._warming.discard(key.location_name)

        threading.Thread(target=start, name="flowpilot-zygote-warm-up", daemon=True).start()

    def _zygote(self, key: ZygoteKey) -> Zygote:
        with self._lock:
            self._retired = [z for z in self._retired if z.alive()]  # alive() reaps the rest
            current = self._zygotes.get(key.location_name)
            if current is not None and current.key == key and current.alive():
                return current
            if current is not None:
                if current.alive():
                    current.retire()  # its code moved: finish its runs, take no new ones
                    self._retired.append(current)
                else:
                    log.warning(
                        "zygote %s for %s died; starting a new one", current.pid, key.location_name
                    )
                    current.kill()
                del self._zygotes[key.location_name]
            spec = {
                **self._spec,
                "code_module": key.code_module,
                "working_directory": key.working_directory,
            }
            zygote = Zygote(key, spec, self._start_timeout)
            self._zygotes[key.location_name] = zygote
            return zygote

    def _retire(self, zygote: Zygote) -> None:
        with self._lock:
            if self._zygotes.get(zygote.key.location_name) is zygote:
                del self._zygotes[zygote.key.location_name]
                zygote.retire()
                self._retired.append(zygote)

    def fork(self, key: ZygoteKey, request: Mapping[str, Any]) -> dict[str, Any]:
        """Fork a worker for the run; a zygote that died meanwhile, or whose code files changed
        since it started, is replaced once."""
        for attempt in (1, 2):
            zygote = self._zygote(key)
            try:
                reply = zygote.fork(request)
            except WarmWorkerUnavailable:
                if zygote.alive() or attempt == 2:
                    raise
                continue
            if reply.get("stale"):
                log.info("code changed since zygote %s started; starting a new one", zygote.pid)
                self._retire(zygote)
                if attempt == 2:
                    raise WarmWorkerUnavailable("the code keeps changing under the new zygote")
                continue
            with self._lock:
                self._workers[reply["pid"]] = reply.get("start")
                self._workers = {p: s for p, s in self._workers.items() if process_alive(p, s)}
            return {**reply, "zygote": zygote.pid}
        raise AssertionError("unreachable")

    def zygote_pids(self) -> list[int]:
        with self._lock:
            return [z.pid for z in [*self._zygotes.values(), *self._retired] if z.alive()]

    def stop(self) -> None:
        with self._lock:
            zygotes = [*self._zygotes.values(), *self._retired]
            self._zygotes.clear()
            self._retired.clear()
            workers = dict(self._workers)
        for zygote in zygotes:
            if zygote.alive():
                zygote.stop(self._stop_grace + 5)
        # Workers of a zygote that died earlier are not its children any more: stop them too.
        for pid, start in workers.items():
            if process_alive(pid, start):
                _signal(pid, signal.SIGINT)
        deadline = time.monotonic() + self._stop_grace
        while time.monotonic() < deadline and any(process_alive(p, s) for p, s in workers.items()):
            time.sleep(0.05)
        for pid, start in workers.items():
            if process_alive(pid, start):
                _signal(pid, signal.SIGKILL)


def _signal(pid: int, signum: int) -> bool:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


_pools: weakref.WeakSet[ZygotePool] = weakref.WeakSet()


@atexit.register
def _stop_pools_at_exit() -> None:
    for pool in list(_pools):
        if pool.owner_pid == os.getpid():
            pool.stop()


class WarmRunLauncher(RunLauncher, ConfigurableClass):
    """Launches each run in a process forked from a warm, pre-imported zygote."""

    def __init__(
        self,
        inst_data: ConfigurableClassData | None = None,
        settings_module: str | None = None,
        preload_modules: Sequence[str] | None = None,
        start_timeout_seconds: float | None = None,
        stop_grace_seconds: float | None = None,
        terminate_wait_seconds: float | None = None,
        cancellation_thread: bool | None = None,
    ) -> None:
        self._inst_data = inst_data
        self.settings_module = settings_module or os.environ.get(
            "DJANGO_SETTINGS_MODULE", DEFAULT_SETTINGS_MODULE
        )
        self.preload_modules = list(DEFAULT_PRELOAD if preload_modules is None else preload_modules)
        self.start_timeout_seconds = start_timeout_seconds or DEFAULT_START_TIMEOUT
        self.stop_grace_seconds = (
            DEFAULT_STOP_GRACE if stop_grace_seconds is None else stop_grace_seconds
        )
        self.terminate_wait_seconds = (
            DEFAULT_TERMINATE_WAIT if terminate_wait_seconds is None else terminate_wait_seconds
        )
        self.cancellation_thread = True if cancellation_thread is None else cancellation_thread
        self._pool: ZygotePool | None = None
        self._pool_lock = threading.Lock()
        self.hostname = socket.gethostname()
        super().__init__()

    # -- ConfigurableClass ----------------------------------------------------------------------

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {
            "settings_module": Field(StringSource, is_required=False),
            "preload_modules": Field(Array(str), is_required=False),
            "start_timeout_seconds": Field(Float, is_required=False),
            "stop_grace_seconds": Field(Float, is_required=False),
            "terminate_wait_seconds": Field(Float, is_required=False),
            "cancellation_thread": Field(Bool, is_required=False),
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> WarmRunLauncher:
        return cls(inst_data=inst_data, **config_value)

    # -- the pool -------------------------------------------------------------------------------

    def pool(self) -> ZygotePool:
        """The zygotes of this process, started with the first launch."""
        with self._pool_lock:
            if self._pool is None or self._pool.owner_pid != os.getpid():
                spec = {
                    "settings_module": self.settings_module,
                    "preload": self.preload_modules,
                    "stop_grace_seconds": self.stop_grace_seconds,
                }
                self._pool = ZygotePool(spec, self.start_timeout_seconds, self.stop_grace_seconds)
                _pools.add(self._pool)
            return self._pool

    def dispose(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None and pool.owner_pid == os.getpid():
            pool.stop()

    def ready_for(self, run: DagsterRun) -> bool:
        """Whether this process can fork the run's worker at once. If not, a zygote for its code
        location starts in the background, so the next run can."""
        if run.job_code_origin is None or not isinstance(run.job_code_origin, JobPythonOrigin):
            return False
        key = zygote_key(run)
        pool = self.pool()
        if pool.has_warm(key):
            return True
        pool.warm_in_background(key)
        return False

    # -- RunLauncher ----------------------------------------------------------------------------

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        if run.job_code_origin is None:
            raise DagsterLaunchFailedError(f"Run {run.run_id} has no job code origin to load.")
        key = zygote_key(run)
        request = {
            "run_id": run.run_id,
            "instance_ref": serialize_value(self._instance.get_ref()),
            "host": self.hostname,
            "watch": self.cancellation_thread,
        }
        try:
            self.pool().fork(key, request)
        except WarmWorkerUnavailable as exc:
            raise DagsterLaunchFailedError(
                f"FlowPilot's warm run launcher could not start a worker for run {run.run_id}: "
                f"{exc}"
            ) from exc

    def _worker(self, run_id: str, wait: float) -> tuple[DagsterRun | None, dict | None]:
        """The run and its worker tag; a run still starting gets `wait` seconds to write it."""
        deadline = time.monotonic() + wait
        while True:
            run = self._instance.get_run_by_id(run_id)
            info = worker_info(run) if run else None
            if info or run is None or run.is_finished or time.monotonic() >= deadline:
                return run, info
            if run.status not in (DagsterRunStatus.STARTING, DagsterRunStatus.CANCELING):
                return run, info
            time.sleep(0.05)

    def terminate(self, run_id: str) -> bool:
        check.str_param(run_id, "run_id")
        run = self._instance.get_run_by_id(run_id)
        if not run or run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        run, info = self._worker(run_id, self.terminate_wait_seconds)
        if run is None or run.is_finished:
            return False
        if info is None:
            self._instance.report_engine_event(
                "No warm run worker is recorded for this run: no termination signal sent.",
                run,
                cls=self.__class__,
            )
            return False
        if info.get("host") != self.hostname:
            if info.get("watch"):
                seconds = self._instance.cancellation_thread_poll_interval_seconds
                self._instance.report_engine_event(
                    f"The run's worker runs on host {info.get('host')!r}: its cancellation thread "
                    f"will interrupt it within {seconds} s.",
                    run,
                    cls=self.__class__,
                )
                return True
            self._instance.report_engine_event(
                f"The run's worker runs on host {info.get('host')!r}, not {self.hostname!r}, "
                "without a cancellation thread: no termination signal sent.",
                run,
                cls=self.__class__,
            )
            return False
        pid = int(info["pid"])
        if not process_alive(pid, info.get("start")) or not _signal(pid, signal.SIGINT):
            run = self._instance.get_run_by_id(run_id)  # it may have ended as the worker exited
            if run is None or run.is_finished:
                return False
            # Nobody is left to report the end: record it as Dagster does for a forced cancel.
            self._instance.report_run_canceled(
                run, message=f"The run worker (pid {pid}) had already exited; marked canceled."
            )
            return True
        self._instance.report_engine_event(
            f"Sent an interrupt to the run worker (pid {pid}).", run, cls=self.__class__
        )
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        run, info = self._worker(run.run_id, 0)
        if run is None:
            return CheckRunHealthResult(WorkerStatus.NOT_FOUND, "run not found")
        if run.status == DagsterRunStatus.SUCCESS:
            return CheckRunHealthResult(WorkerStatus.SUCCESS)
        if run.is_finished:
            return CheckRunHealthResult(WorkerStatus.FAILED, f"run ended {run.status.value}")
        if info is None:
            return CheckRunHealthResult(
                WorkerStatus.NOT_FOUND, "no warm run worker is recorded for this run"
            )
        pid = int(info["pid"])
        if info.get("host") != self.hostname:
            return CheckRunHealthResult(
                WorkerStatus.UNKNOWN,
                f"worker pid {pid} runs on host {info.get('host')!r}, not this one",
                transient=True,
            )
        if process_alive(pid, info.get("start")):
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(pid))
        ended = self._instance.get_run_by_id(run.run_id)  # it may have ended as the worker exited
        if ended is not None and ended.status == DagsterRunStatus.SUCCESS:
            return CheckRunHealthResult(WorkerStatus.SUCCESS, run_worker_id=str(pid))
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"run worker process {pid} on {self.hostname} exited before the run finished",
            run_worker_id=str(pid),
        )

    def get_run_worker_debug_info(
        self, run: DagsterRun, include_container_logs: bool | None = True
    ) -> str | None:
        info = worker_info(run)
        if info is None:
            return None
        alive = info.get("host") == self.hostname and process_alive(
            int(info["pid"]), info.get("start")
        )
        state = "running" if alive else "not running"
        return (
            f"warm run worker pid {info['pid']} on {info.get('host')} "
            f"(zygote {info.get('zygote')}), {state}"
        )
