"""http.request: call a URL and return its status, headers and body."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field, HttpUrl

from orchestration.steps.base import StepConfig, StepFailure, StepOutput, StepRuntime, StepType


class Config(StepConfig):
    url: HttpUrl | str = Field(description="http(s) URL; may be a template")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, str] = Field(default_factory=dict)
    json_body: Any = Field(default=None, description="Sent as a JSON body when set")
    body: str | None = Field(default=None, description="Sent as a raw body when set")
    timeout_seconds: float = Field(default=30.0, gt=0, le=300)
    fail_on_status: bool = Field(default=True, description="Fail the step on a 4xx/5xx answer")


class Output(StepOutput):
    status_code: int
    headers: dict[str, str]
    body: Any = Field(description="Parsed JSON when the answer is JSON, else text")


def run(config: Config, runtime: StepRuntime) -> Output:
    url = str(config.url)
    if not url.startswith(("http://", "https://")):
        raise StepFailure(f"url must start with http:// or https://, got {url[:80]!r}")
    response = runtime.resources["http"].request(
        config.method,
        url,
        headers=config.headers,
        params=config.query,
        json_body=config.json_body,
        content=config.body,
        timeout=config.timeout_seconds,
    )
    body: Any = response.text
    if "json" in response.headers.get("content-type", ""):
        try:
            body = response.json()
        except json.JSONDecodeError:
            pass
    if config.fail_on_status and response.status_code >= 400:
        raise StepFailure(
            f"{config.method} {url} answered {response.status_code}: {response.text[:200]}"
        )
    return Output(status_code=response.status_code, headers=dict(response.headers), body=body)


STEP = StepType(
    name="http.request",
    title="HTTP request",
    description="Call an HTTP endpoint and return its status, headers and body.",
    config_model=Config,
    output_model=Output,
    run=run,
    resources=("http",),
    category="connector",
)
