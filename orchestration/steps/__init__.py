"""The step registry: one module per step type, each exporting STEP. Adding a step type is adding
a module and a line here. Importing this package does not import Dagster."""

from __future__ import annotations

from orchestration.steps import email_send, http_request, slack_post_message, transform_template
from orchestration.steps.base import StepType

REGISTRY: dict[str, StepType] = {
    module.STEP.name: module.STEP
    for module in (transform_template, http_request, email_send, slack_post_message)
}


def get_step_type(name: str) -> StepType | None:
    return REGISTRY.get(name)
