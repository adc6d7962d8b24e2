"""The step registry: one module per step type, each exporting STEP. Adding a step type is adding
a module and a line here. Importing this package does not import Dagster."""

from __future__ import annotations

from orchestration.steps import http_request, transform_template
from orchestration.steps.base import StepType

REGISTRY: dict[str, StepType] = {
    module.STEP.name: module.STEP for module in (transform_template, http_request)
}


def get_step_type(name: str) -> StepType | None:
    return REGISTRY.get(name)
