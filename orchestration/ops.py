"""One Dagster op per workflow step: render the step's config, run its step type, record it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from typing import Any

from dagster import Any as DagsterAny
from dagster import (
    Backoff,
    Failure,
    In,
    OpDefinition,
    OpExecutionContext,
    Out,
    Output,
    Permissive,
    RetryPolicy,
)

from orchestration.steps import REGISTRY, templating
from orchestration.steps.base import StepFailure, StepRuntime
from orchestration.steps.definition import StepSpec, WorkflowSpec

MAX_OUTPUT_BYTES = 256 * 1024
CONTROL_PLANE = "control_plane"
LOG_FLUSH_LINES = 200  # a chatty step's lines are written in batches of this many


def _retry_policy(step: StepSpec) -> RetryPolicy | None:
    if not step.retry or step.retry.max_attempts <= 1:
        return None
    return RetryPolicy(
        max_retries=step.retry.max_attempts - 1,
        delay=step.retry.backoff_seconds,
        backoff=Backoff.EXPONENTIAL,
    )


def step_op(spec: WorkflowSpec, step: StepSpec, position: int) -> OpDefinition:
    """The step's op, built as an `OpDefinition` with a `(context, inputs)` compute function
    rather than through `@op`, whose signature inspection is most of the cost of loading a
    location of thousands of steps (bench/code_location.py --profile)."""
    step_type = REGISTRY[step.type]

    # No annotation on `context`: Dagster checks it at runtime, and here it would be a string.
    def compute(context, inputs: Mapping[str, Any]) -> Iterator[Any]:
        yield from run_step(context, spec, step, position, dict(inputs))

    return OpDefinition(
        compute_fn=compute,
        name=f"{spec.job_name}__{step.id}",
        description=step.name or f"{step.type} step '{step.id}'",
        ins={upstream: In(DagsterAny) for upstream in step.after},
        outs={"result": Out(DagsterAny, is_required=False)},
        config_schema={"inputs": Permissive()},
        required_resource_keys={CONTROL_PLANE, *step_type.resources},
        retry_policy=_retry_policy(step),
        tags={"flowpilot/step_type": step.type},
    )


def run_step(
    context: OpExecutionContext,
    spec: WorkflowSpec,
    step: StepSpec,
    position: int,
    upstream: dict[str, dict],
):
    control_plane = getattr(context.resources, CONTROL_PLANE)
    inputs = context.op_config["inputs"]
    run = context.run
    execution_id = control_plane.execution_claim(
        run_id=context.run_id,
        tags=run.tags,
        inputs=inputs,
        parent_run_id=run.parent_run_id,
        step_keys=list(run.step_keys_to_execute) if run.step_keys_to_execute else None,
    )
    record = {
        "execution_id": execution_id,
        "organization_id": spec.organization_id,
        "step_id": step.id,
        "step_type": step.type,
        "position": position,
    }
    # What the step logs goes to Dagster's log and, the same text, to the execution's log.
    logged = StepLogLines(
        lambda lines: control_plane.execution_log_append(
            organization_id=spec.organization_id, execution_id=execution_id, lines=lines
        )
    )
    # Variables are read when the step runs, never put in run config: secrets stay out of
    # Dagster. Fetched once per run, and only by steps whose templates use them.
    variables = templating.Variables()
    if _uses_variables(step):
        try:
            variables = control_plane.variables_for_run(
                run_id=context.run_id,
                organization_id=spec.organization_id,
                workflow_id=spec.workflow_id,
            )
        except Exception as exc:
            _fail(
                control_plane, record, f"variables: {type(exc).__name__}: {exc}", variables, logged
            )
    # Each op passes on the outputs of all its ancestors, so templates can reach any of them.
    steps: dict[str, Any] = {}
    for outputs in upstream.values():
        steps.update(outputs)
    template_context = {
        "inputs": inputs,
        "steps": steps,
        "run": {"id": context.run_id, "execution_id": execution_id},
        "workflow": {"slug": spec.workflow_slug, "version": spec.version},
        "vars": variables,
    }

    if step.when:
        try:
            go = templating.truthy(step.when, template_context)
        except templating.TemplateError as exc:
            _fail(control_plane, record, f"when: {exc}", variables, logged)
        if not go:
            reason = f"condition {step.when!r} is false"
            control_plane.step_finished(
                **record, status="skipped", detail=reason, logs=logged.drain()
            )
            context.log.info(f"step '{step.id}' skipped: {reason}")
            return  # no output: Dagster skips every step downstream of this one

    control_plane.step_started(**record, attempt=context.retry_number + 1)
    step_type = REGISTRY[step.type]
    redaction = variables  # what messages are redacted with: vars, and credentials once read
    try:
        config = step_type.config_model.model_validate(
            templating.render(step.config, template_context)
        )
        # A connector's credentials are read now, by name, and kept out of run config; they
        # join the secrets redacted from the step's logs and failure messages.
        credentials: dict[str, Any] = {}
        connector = getattr(config, "connector", None) if step_type.connector_kind else None
        if connector:
            credentials = control_plane.connector_credentials(
                run_id=context.run_id, organization_id=spec.organization_id, name=connector
            )
            redaction = templating.with_secrets(variables, credentials)
        runtime = StepRuntime(
            resources={key: getattr(context.resources, key) for key in step_type.resources},
            log=_RedactingLog(context.log, redaction, logged),
            run_id=context.run_id,
            step_id=step.id,
            credentials=credentials,
        )
        output = _run_with_timeout(step, lambda: step_type.run(config, runtime))
        output = output.model_dump(mode="json")
        size = len(json.dumps(output))
        if size > MAX_OUTPUT_BYTES:
            raise StepFailure(
                f"output is {size} bytes, over the {MAX_OUTPUT_BYTES}-byte limit for step outputs"
            )
    except Exception as exc:  # every failure is recorded on the step, then fails the op
        message = str(exc) if isinstance(exc, StepFailure) else f"{type(exc).__name__}: {exc}"
        _fail(control_plane, record, message, redaction, logged)
    control_plane.step_finished(**record, status="success", output=output, logs=logged.drain())
    yield Output({**steps, step.id: {"output": output}}, "result")


def _run_with_timeout(step: StepSpec, call):
    """Run the step's work, failing it after `timeout_seconds` if one is set. The worker thread
    cannot be killed; it is abandoned and ends with the run worker process."""
    if not step.timeout_seconds:
        return call()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"step-{step.id}")
    try:
        return pool.submit(call).result(timeout=step.timeout_seconds)
    except FutureTimeout:
        raise StepFailure(f"timed out after {step.timeout_seconds:g}s") from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _uses_variables(step: StepSpec) -> bool:
    texts = [text for _, text in templating.template_strings(step.config)]
    if step.when:
        texts.append(step.when)
    return any(templating.mentions_variables(text) for text in texts)


def _has_secrets(variables: templating.Variables) -> bool:
    return bool(templating.secret_texts(variables))


def _fail(
    control_plane,
    record: dict,
    message: str,
    variables: templating.Variables,
    logged: StepLogLines,
):
    """Record the failure and fail the op. A message may quote a secret (a validation error
    shows the rendered value, an HTTP error the echoed request): it is redacted, and the
    original exception is not chained, so its text never reaches Dagster's event log."""
    message = templating.redact(message, variables)
    control_plane.step_finished(**record, status="failure", error=message, logs=logged.drain())
    failure = Failure(description=f"step '{record['step_id']}' failed: {message}")
    if _has_secrets(variables):
        raise failure from None
    raise failure


class StepLogLines:
    """The lines a step logged, kept for the execution's log: written with the step's end in
    the same batch, or every LOG_FLUSH_LINES lines through `flush` for a chatty step."""

    def __init__(self, flush: Callable[[list[dict]], Any] | None = None):
        self._flush = flush
        self._lines: list[dict] = []

    def add(self, level: str, message: str) -> None:
        self._lines.append({"level": level, "message": message, "created_at": datetime.now(tz=UTC)})
        if self._flush is not None and len(self._lines) >= LOG_FLUSH_LINES:
            self._flush(self.drain())

    def drain(self) -> list[dict]:
        lines, self._lines = self._lines, []
        return lines


class _RedactingLog:
    """The op's logger as steps see it: messages are redacted (when the run has secrets)
    before they become Dagster log events, and the same text is kept in `lines`."""

    _LEVELS = frozenset({"debug", "info", "warning", "warn", "error", "critical", "exception"})

    def __init__(self, log, variables: templating.Variables, lines: StepLogLines | None = None):
        self._log = log
        self._variables = variables if _has_secrets(variables) else None
        self._lines = lines

    def __getattr__(self, name: str):
        method = getattr(self._log, name)
        if name not in self._LEVELS:
            return method

        def logged(message: Any, *args: Any, **kwargs: Any) -> None:
            text = str(message) % args if args else str(message)
            if self._variables is not None:
                text = templating.redact(text, self._variables)
            method(text, **kwargs)
            if self._lines is not None:
                self._lines.add(name, text)

        return logged
