"""A published workflow version -> a Dagster job. A pure function of the frozen spec: the same
version renders the same job in every process."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import Any as DagsterAny
from dagster import (
    Bool,
    ConfigMapping,
    DependencyDefinition,
    Field,
    Float,
    GraphDefinition,
    Int,
    JobDefinition,
    NodeInvocation,
    Noneable,
    Permissive,
    Shape,
    String,
    in_process_executor,
)

from orchestration.ops import step_op
from orchestration.steps.definition import InputSpec, WorkflowSpec

TAG_ORG = "flowpilot/org"
TAG_WORKFLOW = "flowpilot/workflow"
TAG_VERSION = "flowpilot/version"
TAG_PRIORITY = "dagster/priority"  # the run queue dequeues higher values first
STAMP_METADATA = "flowpilot/render_stamp"  # WorkflowSpec.stamp: what the job was rendered from

_CONFIG_TYPES = {
    "string": String,
    "integer": Int,
    "number": Float,
    "boolean": Bool,
    "object": Permissive(),
    "array": [DagsterAny],
}


def _input_field(spec: InputSpec) -> Field:
    kind = _CONFIG_TYPES[spec.type]
    if spec.default is not None:
        return Field(kind, default_value=spec.default, description=spec.description or None)
    if spec.is_required:
        return Field(kind, description=spec.description or None)
    return Field(Noneable(kind), is_required=False, description=spec.description or None)


def inputs_config(spec: WorkflowSpec) -> ConfigMapping:
    """Run config is `{"inputs": {...}}`, typed from the definition's inputs, so the Dagster
    launchpad shows a form for them and a re-execution carries them along."""
    fields = {name: _input_field(i) for name, i in spec.definition.inputs.items()}
    required = any(f.is_required for f in fields.values())
    step_ids = [step.id for step in spec.definition.steps]

    def to_ops(config: dict[str, Any]) -> dict[str, Any]:
        inputs = config.get("inputs") or {}
        return {"ops": {step_id: {"config": {"inputs": inputs}} for step_id in step_ids}}

    return ConfigMapping(
        config_schema={"inputs": Field(Shape(fields), is_required=required)},
        config_fn=to_ops,
    )


def build_job(spec: WorkflowSpec, resource_defs: Mapping[str, Any]) -> JobDefinition:
    node_defs = []
    dependencies = {}
    for position, step in enumerate(spec.definition.steps):
        op_def = step_op(spec, step, position)
        node_defs.append(op_def)
        dependencies[NodeInvocation(op_def.name, alias=step.id)] = {
            upstream: DependencyDefinition(upstream, "result") for upstream in step.after
        }
    graph = GraphDefinition(
        name=spec.job_name,
        node_defs=node_defs,
        dependencies=dependencies,
        description=f"{spec.workflow_name} (FlowPilot workflow, version {spec.version})",
    )
    # Only the resources its steps use: each one attached adds its config to the job's run
    # config schema, which Dagster snapshots per job (most of a large location's load).
    used = set().union(*(op_def.required_resource_keys for op_def in node_defs))
    return graph.to_job(
        name=spec.job_name,
        resource_defs={key: value for key, value in resource_defs.items() if key in used},
        config=inputs_config(spec),
        executor_def=in_process_executor,  # small workflows: no per-step process spawn
        tags={
            TAG_ORG: spec.org_slug,
            TAG_WORKFLOW: spec.workflow_slug,
            TAG_VERSION: str(spec.version),
            TAG_PRIORITY: str(spec.priority),
        },
        metadata={"flowpilot/content_hash": spec.content_hash, STAMP_METADATA: spec.stamp},
    )
