"""transform.template: render text (or a structure) from inputs and earlier steps' outputs."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from orchestration.steps.base import StepConfig, StepOutput, StepRuntime, StepType


class Config(StepConfig):
    template: Any = Field(
        description="A Jinja2 template string, or an object/list whose strings are templates. "
        "Rendered in the sandbox before the step runs."
    )


class Output(StepOutput):
    result: Any = Field(description="The rendered value")


def run(config: Config, runtime: StepRuntime) -> Output:
    # Rendering happens before `run`, with the rest of the config; the result is the value.
    return Output(result=config.template)


STEP = StepType(
    name="transform.template",
    title="Template",
    description="Render a Jinja2 template (sandboxed) from the workflow's inputs and step outputs.",
    config_model=Config,
    output_model=Output,
    run=run,
    category="transform",
)
