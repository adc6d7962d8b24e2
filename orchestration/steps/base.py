"""What a step type is. Plain Python and pydantic: the control plane imports this for validation
and the JSON Schema, so nothing here may import Dagster."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict


class StepConfig(BaseModel):
    """Base for step config models: unknown keys are errors, so typos surface at publish."""

    model_config = ConfigDict(extra="forbid")


class StepOutput(BaseModel):
    model_config = ConfigDict(extra="allow")


class StepFailure(Exception):
    """A step failed for a reason the user can act on; the message is shown as the step error."""


@dataclass(frozen=True)
class StepRuntime:
    """What a running step gets besides its config: the resources it declared and a logger."""

    resources: Mapping[str, Any]
    log: logging.Logger | Any
    run_id: str = ""
    step_id: str = ""
    # The decrypted credentials of the connector the step's config names (config.connector),
    # looked up when the op runs; never in run config, and redacted from messages.
    credentials: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepType:
    name: str
    title: str
    description: str
    config_model: type[StepConfig]
    output_model: type[StepOutput]
    run: Callable[[Any, StepRuntime], StepOutput]
    resources: tuple[str, ...] = ()
    category: str = "general"
    templated_fields: tuple[str, ...] = field(default=())
    # The connector kind `config.connector` must name, for step types that can use one.
    connector_kind: str | None = None

    def config_schema(self) -> dict[str, Any]:
        return self.config_model.model_json_schema()

    def output_schema(self) -> dict[str, Any]:
        return self.output_model.model_json_schema()
