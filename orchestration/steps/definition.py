"""The workflow definition language (ARCHITECTURE.md): pydantic models, validation into one list
of errors that each name a JSON path and the step, the content hash, and input coercion."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestration.steps import templating

STEP_ID_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
INPUT_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"

InputType = Literal["string", "integer", "number", "boolean", "object", "array"]


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: InputType = "string"
    description: str = ""
    default: Any = None
    required: bool | None = Field(
        default=None, description="Defaults to true when no default is given"
    )

    @property
    def is_required(self) -> bool:
        return self.required if self.required is not None else self.default is None


class RetrySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=1, ge=1, le=10)
    backoff_seconds: float = Field(default=1.0, ge=0, le=3600)


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=STEP_ID_PATTERN)
    type: str
    name: str = ""
    config: dict[str, Any] = Field(default_factory=dict)
    after: tuple[str, ...] = ()
    when: str | None = None
    retry: RetrySpec | None = None
    timeout_seconds: float | None = Field(default=None, gt=0, le=86400)


class WorkflowDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    steps: tuple[StepSpec, ...] = Field(min_length=1)
    outputs: dict[str, str] = Field(default_factory=dict)


@dataclass(frozen=True)
class DefinitionError:
    path: str
    message: str
    step: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


class InvalidDefinition(Exception):
    def __init__(self, errors: list[DefinitionError]):
        super().__init__("; ".join(f"{e.path}: {e.message}" for e in errors))
        self.errors = errors


def canonical_json(definition: Any) -> str:
    return json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(definition: Any) -> str:
    return hashlib.sha256(canonical_json(definition).encode()).hexdigest()


def _loc(loc: Iterable[Any]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _step_id_at(raw: Any, index: int) -> str | None:
    try:
        value = raw["steps"][index]["id"]
        return value if isinstance(value, str) else None
    except (KeyError, IndexError, TypeError):
        return None


def _schema_errors(raw: Any, exc: ValidationError) -> list[DefinitionError]:
    errors = []
    for item in exc.errors():
        loc = item["loc"]
        step = _step_id_at(raw, loc[1]) if len(loc) > 1 and loc[0] == "steps" else None
        errors.append(DefinitionError(_loc(loc) or "definition", item["msg"], step))
    return errors


# What `validate` checks `config.connector` against: name -> kind, or just the names.
Connectors = Mapping[str, str] | AbstractSet[str]


def parse(
    raw: Any, *, variables: set[str] | None = None, connectors: Connectors | None = None
) -> WorkflowDefinition:
    """Parse and fully validate; raises InvalidDefinition with every error found."""
    errors = validate(raw, variables=variables, connectors=connectors)
    if errors:
        raise InvalidDefinition(errors)
    return WorkflowDefinition.model_validate(raw)


def validate(
    raw: Any, *, variables: set[str] | None = None, connectors: Connectors | None = None
) -> list[DefinitionError]:
    """Every error in a definition. `variables` are the names `{{ vars.x }}` may use (the
    organization's and the workflow's): given, other names are errors; None skips that check,
    for a definition checked without its workflow. `connectors` likewise for the connectors
    `config.connector` may name (name -> kind also checks the kind the step type needs)."""
    from orchestration.steps import REGISTRY

    if not isinstance(raw, dict):
        return [DefinitionError("definition", "must be a JSON object with 'steps'")]
    try:
        definition = WorkflowDefinition.model_validate(raw)
    except ValidationError as exc:
        return _schema_errors(raw, exc)

    errors: list[DefinitionError] = []
    for name in definition.inputs:
        if not re.match(INPUT_NAME_PATTERN, name):
            errors.append(DefinitionError(f"inputs.{name}", "input names must be identifiers"))

    seen: dict[str, int] = {}
    for index, step in enumerate(definition.steps):
        if step.id in seen:
            errors.append(
                DefinitionError(
                    f"steps[{index}].id",
                    f"duplicate step id '{step.id}' (first used at steps[{seen[step.id]}])",
                    step.id,
                )
            )
        else:
            seen[step.id] = index

    for index, step in enumerate(definition.steps):
        base = f"steps[{index}]"
        step_type = REGISTRY.get(step.type)
        if step_type is None:
            known = ", ".join(sorted(REGISTRY))
            errors.append(
                DefinitionError(
                    f"{base}.type", f"unknown step type '{step.type}' (known: {known})", step.id
                )
            )
        else:
            errors.extend(_config_errors(step_type.config_model, step, base))
            errors.extend(_connector_errors(step_type, step, base, connectors))
        for position, upstream in enumerate(step.after):
            if upstream == step.id:
                errors.append(
                    DefinitionError(
                        f"{base}.after[{position}]", "a step cannot follow itself", step.id
                    )
                )
            elif upstream not in seen:
                errors.append(
                    DefinitionError(
                        f"{base}.after[{position}]", f"unknown step '{upstream}'", step.id
                    )
                )

    cycle = _find_cycle(definition)
    if cycle:
        index = seen[cycle[0]]
        errors.append(
            DefinitionError(
                f"steps[{index}].after",
                "cycle between steps: " + " -> ".join([*cycle, cycle[0]]),
                cycle[0],
            )
        )
    else:
        upstream = ancestors(definition)
        errors.extend(_reference_errors(definition, upstream, variables))
        errors.extend(_unreachable_errors(definition, upstream))
    for name, expression in definition.outputs.items():
        errors.extend(
            _template_refs_errors(expression, f"outputs.{name}", None, definition, None, variables)
        )
    return errors


def _config_errors(model: type[BaseModel], step: StepSpec, base: str) -> list[DefinitionError]:
    """Validate a step's config against its model. A template string may stand for a value of any
    type, so templated fields are left out here (a missing one is not an error) and checked
    after rendering, when the step runs."""
    config = {k: v for k, v in step.config.items() if not templating.is_template(v)}
    errors: list[DefinitionError] = []
    try:
        model.model_validate(config)
    except ValidationError as exc:
        templated = {k for k, v in step.config.items() if templating.is_template(v)}
        for item in exc.errors():
            field = item["loc"][0] if item["loc"] else None
            if item["type"] == "missing" and field in templated:
                continue
            errors.append(
                DefinitionError(
                    f"{base}.config.{_loc(item['loc'])}".rstrip("."), item["msg"], step.id
                )
            )
    return errors


def _connector_errors(
    step_type: Any, step: StepSpec, base: str, connectors: Connectors | None
) -> list[DefinitionError]:
    """`config.connector` must be a literal name (checked at publish, looked up at run time)
    of one of the organization's connectors, of the kind the step type uses."""
    name = step.config.get("connector")
    if name is None or step_type.connector_kind is None:
        return []  # no connector; a step type without one rejects the key as an extra field
    path = f"{base}.config.connector"
    if templating.is_template(name):
        message = "must be a connector's name, not a template (it is checked when publishing)"
        return [DefinitionError(path, message, step.id)]
    if connectors is None or not isinstance(name, str):
        return []  # not checked here / a type error reported by the config model
    if name not in connectors:
        known = sorted(
            n
            for n in connectors
            if not isinstance(connectors, Mapping) or connectors[n] == step_type.connector_kind
        )
        hint = f" (its {step_type.connector_kind} connectors: {', '.join(known)})" if known else ""
        message = f"unknown connector '{name}': the organization has no connector of that name"
        return [DefinitionError(path, message + hint, step.id)]
    if isinstance(connectors, Mapping) and connectors[name] != step_type.connector_kind:
        message = (
            f"connector '{name}' is a {connectors[name]} connector; {step.type} needs a "
            f"{step_type.connector_kind} connector"
        )
        return [DefinitionError(path, message, step.id)]
    return []


def _find_cycle(definition: WorkflowDefinition) -> list[str] | None:
    graph = {s.id: [u for u in s.after if u != s.id] for s in definition.steps}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for upstream in graph.get(node, []):
            if upstream not in graph:
                continue
            if state.get(upstream) == 1:
                return stack[stack.index(upstream) :]
            if upstream not in state:
                found = visit(upstream)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for step in definition.steps:
        if step.id not in state:
            found = visit(step.id)
            if found:
                return list(reversed(found))
    return None


def ancestors(definition: WorkflowDefinition) -> dict[str, set[str]]:
    """Every step's transitive upstream steps (the definition must be acyclic)."""
    after = {s.id: set(s.after) for s in definition.steps}
    memo: dict[str, set[str]] = {}

    def walk(step_id: str) -> set[str]:
        if step_id not in memo:
            memo[step_id] = set()
            result: set[str] = set()
            for upstream in after.get(step_id, ()):
                result |= {upstream} | walk(upstream)
            memo[step_id] = result
        return memo[step_id]

    return {s.id: walk(s.id) for s in definition.steps}


def _reference_errors(
    definition: WorkflowDefinition, upstream: dict[str, set[str]], variables: set[str] | None
) -> list[DefinitionError]:
    errors: list[DefinitionError] = []
    for index, step in enumerate(definition.steps):
        base = f"steps[{index}]"
        texts = templating.template_strings(step.config, f"{base}.config")
        if step.when:
            texts.append((f"{base}.when", step.when))
        for path, text in texts:
            errors.extend(
                _template_refs_errors(text, path, step.id, definition, upstream, variables)
            )
    return errors


def _unreachable_errors(
    definition: WorkflowDefinition, upstream: dict[str, set[str]]
) -> list[DefinitionError]:
    """A step whose `when` is false whatever the run never runs, and Dagster skips everything
    downstream of a skipped step: such steps are mistakes, so publishing refuses them."""
    errors: list[DefinitionError] = []
    never: set[str] = set()
    for index, step in enumerate(definition.steps):
        if step.when and templating.constant_truth(step.when) is False:
            never.add(step.id)
            errors.append(
                DefinitionError(
                    f"steps[{index}].when",
                    f"condition {step.when!r} is always false: the step can never run",
                    step.id,
                )
            )
    if not never:
        return errors
    for index, step in enumerate(definition.steps):
        causes = sorted(upstream.get(step.id, set()) & never)
        if step.id in never or not causes:
            continue
        names = ", ".join(f"'{name}'" for name in causes)
        errors.append(
            DefinitionError(
                f"steps[{index}].after",
                f"the step can never run: upstream step {names} never runs "
                "(its 'when' is always false)",
                step.id,
            )
        )
    return errors


def _template_refs_errors(
    text: str,
    path: str,
    step_id: str | None,
    definition: WorkflowDefinition,
    upstream: dict[str, set[str]] | None,
    variables: set[str] | None = None,
) -> list[DefinitionError]:
    try:
        found = templating.template_references(text)
    except templating.TemplateError as exc:
        return [DefinitionError(path, str(exc), step_id)]
    errors = []
    known_steps = {s.id for s in definition.steps}
    for name in sorted(found.inputs - set(definition.inputs)):
        errors.append(DefinitionError(path, f"unknown input '{name}'", step_id))
    if found.whole_vars:
        errors.append(
            DefinitionError(
                path,
                "variables are read one by one, by a literal name: vars.<name> or vars['name']",
                step_id,
            )
        )
    if variables is not None:
        for name in sorted(found.variables - set(variables)):
            errors.append(
                DefinitionError(
                    path,
                    f"unknown variable '{name}': define it for this workflow or the organization",
                    step_id,
                )
            )
    for name in sorted(found.steps):
        if name not in known_steps:
            errors.append(DefinitionError(path, f"unknown step '{name}'", step_id))
        elif upstream is not None and step_id is not None and name not in upstream[step_id]:
            errors.append(
                DefinitionError(
                    path,
                    f"step '{name}' is not upstream of '{step_id}': add it to 'after'",
                    step_id,
                )
            )
    return errors


_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def coerce_inputs(definition: WorkflowDefinition, given: dict[str, Any]) -> tuple[dict, dict]:
    """Apply defaults and check types. Returns (inputs, field errors keyed by input name)."""
    errors: dict[str, list[str]] = {}
    for name in given:
        if name not in definition.inputs:
            errors[name] = [
                f"unknown input (expected one of: {', '.join(definition.inputs) or 'none'})"
            ]
    result: dict[str, Any] = {}
    for name, spec in definition.inputs.items():
        if name not in given or given[name] is None:
            if spec.default is not None:
                result[name] = spec.default
            elif spec.is_required:
                errors[name] = ["this input is required"]
            continue
        value = given[name]
        expected = _PY_TYPES[spec.type]
        wrong_bool = isinstance(value, bool) and spec.type in ("integer", "number")
        if not isinstance(value, expected) or wrong_bool:
            errors[name] = [f"expected {spec.type}, got {type(value).__name__}"]
            continue
        result[name] = value
    return result, errors


def job_name_for(org_slug: str, workflow_slug: str) -> str:
    """Deterministic Dagster job name for a workflow: `<org>__<workflow>`, slugs as identifiers."""
    return f"{org_slug}__{workflow_slug}".replace("-", "_")


# Every WorkflowSpec field but the definition, which `content_hash` stands for.
_STAMPED_FIELDS = (
    "organization_id",
    "org_slug",
    "workflow_id",
    "workflow_slug",
    "workflow_name",
    "version_id",
    "version",
    "content_hash",
    "priority",
)


def render_stamp(fields: Mapping[str, Any]) -> str:
    """A digest of everything a job is rendered from (a WorkflowSpec's fields, the definition
    by its content hash): two specs with the same stamp render the same job. A workflow renamed
    or re-prioritised without a new version gets a new stamp."""
    values = [fields[name] for name in _STAMPED_FIELDS]
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()[:32]


class PublishedJob(NamedTuple):
    """One job of the code location: the version it renders and that version's render stamp."""

    version_id: int
    stamp: str


class WorkflowSpec(BaseModel):
    """A frozen, typed published version: the only input to rendering."""

    model_config = ConfigDict(frozen=True)

    organization_id: int
    org_slug: str
    workflow_id: int
    workflow_slug: str
    workflow_name: str
    version_id: int
    version: int
    content_hash: str
    priority: int = 0
    definition: WorkflowDefinition

    @property
    def job_name(self) -> str:
        return job_name_for(self.org_slug, self.workflow_slug)

    @property
    def stamp(self) -> str:
        return render_stamp({name: getattr(self, name) for name in _STAMPED_FIELDS})
