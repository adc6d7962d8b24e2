"""The definition language as one JSON Schema (draft 2020-12), generated from the pydantic
models and the step registry, so editors and API clients validate and autocomplete against
exactly what publishing accepts. Each step type's `config` schema applies when `type` names it;
its output schema says what `{{ steps.<id>.output... }}` can reference."""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from orchestration.steps.definition import WorkflowDefinition

SCHEMA_ID = "https://flowpilot.dev/schemas/workflow-definition.json"


def _hoist_defs(schema: dict[str, Any], defs: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Move a sub-schema's `$defs` into the root's under a prefix, rewriting its `$ref`s."""
    schema = copy.deepcopy(schema)
    local = schema.pop("$defs", {})

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                key: (
                    value.replace("#/$defs/", f"#/$defs/{prefix}")
                    if key == "$ref" and isinstance(value, str)
                    else rewrite(value)
                )
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        return node

    for name, definition in local.items():
        defs[f"{prefix}{name}"] = rewrite(definition)
    return rewrite(schema)


@cache
def definition_schema() -> dict[str, Any]:
    from orchestration.steps import REGISTRY

    schema = WorkflowDefinition.model_json_schema()
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    step_types = sorted(REGISTRY)
    defs["StepSpec"]["properties"]["type"] = {
        "type": "string",
        "enum": step_types,
        "description": "The step type; its config schema is in x-step-types.",
    }
    rules = []
    catalog = {}
    for name in step_types:
        step = REGISTRY[name]
        prefix = "".join(part.title() for part in name.replace("_", ".").split(".")) + "_"
        config = _hoist_defs(step.config_schema(), defs, prefix)
        output = _hoist_defs(step.output_schema(), defs, prefix)
        defs[f"{prefix}Config"] = config
        rules.append(
            {
                "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                "then": {"properties": {"config": {"$ref": f"#/$defs/{prefix}Config"}}},
            }
        )
        catalog[name] = {
            "title": step.title,
            "description": step.description,
            "category": step.category,
            "resources": list(step.resources),
            "config": {"$ref": f"#/$defs/{prefix}Config"},
            "output": output,
        }
    defs["StepSpec"]["allOf"] = rules
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "FlowPilot workflow definition",
        "description": (
            "inputs with types and defaults; steps with after, when, retry and timeout; "
            "outputs. Strings in step configs, `when` and outputs are Jinja templates over "
            "inputs, steps.<id>.output and vars."
        ),
        **schema,
        "x-step-types": catalog,
    }
