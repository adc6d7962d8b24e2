"""FlowPilot under `flowpilot up` as a system the trigger benchmarks drive (bench/_systems.py
has the measurement points)."""

from __future__ import annotations

import math
import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _systems import (
    FINISHED_RUN,
    UP_TIMEOUT,
    DagsterStorage,
    ProcessWatch,
    System,
    Trigger,
    _wait,
    _workspace_jobs,
)

THREE_STEPS = {
    "inputs": {"n": {"type": "integer", "default": 0}},
    "steps": [
        {"id": "first", "type": "transform.template", "config": {"template": "{{ inputs.n }}"}},
        {
            "id": "second",
            "type": "transform.template",
            "after": ["first"],
            "config": {"template": "{{ steps.first.output.result }}+1"},
        },
        {
            "id": "third",
            "type": "transform.template",
            "after": ["second"],
            "config": {"template": "({{ steps.second.output.result }})*2"},
        },
    ],
}


# -- processes -----------------------------------------------------------------------------------


class FlowPilot(System):
    label = "FlowPilot webhook"

    def __init__(self, cfg: Any, token: str, log_dir: Path, concurrent_runs: int = 10) -> None:
        self.cfg = cfg
        self.token = token
        self.log = log_dir / "flowpilot-up.log"
        self.concurrent_runs = concurrent_runs
        self.process: subprocess.Popen | None = None
        self.hook_url = ""

    def __enter__(self) -> FlowPilot:
        import httpx

        from flowpilot import pg, processes

        self.process = processes.spawn(
            [processes.bin_path("flowpilot"), "up"], dict(os.environ), log_file=self.log
        )
        self.watch = ProcessWatch(
            {"system": self.process.pid, "postgres": pg.server_pid(self.cfg.pg_dir) or -1}
        ).start()
        try:
            _wait(
                lambda: "FlowPilot is up" in self.log.read_text(errors="replace"),
                UP_TIMEOUT,
                f"`flowpilot up` ready (see {self.log})",
                self.process,
            )
            self.api = httpx.Client(
                base_url=f"{self.cfg.control_plane_url}/api/v1/orgs/demo/",
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=60,
            )
            self.hooks = httpx.Client(timeout=60)
            self.storage = DagsterStorage(self.cfg.dagster_pg_url)
            self._prepare()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close("api", "hooks", "storage")

    def _call(self, method: str, path: str, expect: int, **kwargs: Any) -> dict:
        response = self.api.request(method, path, **kwargs)
        if response.status_code != expect:
            raise SystemExit(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json()

    def _prepare(self) -> None:
        self._call(
            "PATCH",
            "quota",
            200,
            json={"plan": "enterprise", "concurrent_runs": self.concurrent_runs},
        )
        workflow = self._call(
            "POST",
            "workflows",
            201,
            json={"name": f"Bench three steps {int(time.time())}", "definition": THREE_STEPS},
        )
        self._call("POST", f"workflows/{workflow['id']}/publish", 201, json={})
        hook = self._call(
            "POST", f"workflows/{workflow['id']}/triggers", 201, json={"kind": "webhook"}
        )
        self.hook_url = hook["url"]
        from orchestration.steps.definition import job_name_for

        self.job_name = job_name_for("demo", workflow["slug"])
        self.workflow_id = workflow["id"]
        _wait(
            lambda: self.job_name in _workspace_jobs(self.cfg.dagster_url),
            120,
            f"job {self.job_name} loaded in Dagster",
            self.process,
        )

    def send(self, index: int) -> Trigger:
        t0 = time.time()
        response = self.hooks.post(self.hook_url, json={"inputs": {"n": index}})
        answer = time.time() - t0
        if response.status_code != 202:
            raise SystemExit(f"webhook answered {response.status_code}: {response.text[:500]}")
        return Trigger(index, t0, answer, response.json()["execution_id"])

    def resolve(self, triggers: list[Trigger]) -> None:
        from control_plane.executions.models import WorkflowExecution

        rows = (
            WorkflowExecution.objects.unscoped()  # a system observer, past row security
            .using("owner")
            .filter(pk__in=[t.key for t in triggers])
            .values_list("pk", "dagster_run_id", "status", "finished_at")
        )
        executions = {pk: (run_id, status, end) for pk, run_id, status, end in rows}
        for trigger in triggers:
            run_id, status, end = executions.get(trigger.key, (None, "", None))
            trigger.run_id = run_id or trigger.run_id
            if status in WorkflowExecution.FINISHED and end is not None:
                trigger.execution_finished = end.timestamp()
        self._fill_times(triggers)
        for trigger in triggers:
            trigger.complete = trigger.status in FINISHED_RUN and not math.isnan(
                trigger.execution_finished
            )

    def executions_finished_between(self, start: float, end: float) -> list[float]:
        from control_plane.executions.models import WorkflowExecution

        return [
            moment.timestamp()
            for moment in WorkflowExecution.objects.unscoped()
            .using("owner")
            .filter(
                status=WorkflowExecution.Status.SUCCESS,
                finished_at__gte=datetime.fromtimestamp(start, UTC),
                finished_at__lte=datetime.fromtimestamp(end, UTC),
            )
            .values_list("finished_at", flat=True)
        ]

    def backlog(self) -> dict[str, int]:
        from control_plane.executions.models import TriggerEvent, WorkflowExecution

        executions = WorkflowExecution.objects.unscoped().using("owner")
        return {
            "events not launched": TriggerEvent.objects.unscoped()
            .using("owner")
            .filter(status__in=[TriggerEvent.Status.PENDING, TriggerEvent.Status.LAUNCHING])
            .count(),
            "executions queued": executions.filter(status=WorkflowExecution.Status.QUEUED).count(),
            "executions running": executions.filter(
                status=WorkflowExecution.Status.RUNNING
            ).count(),
        }
