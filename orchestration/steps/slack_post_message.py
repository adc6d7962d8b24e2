"""slack.post_message: post a message (text, optional Block Kit blocks, optionally in a thread)
to a Slack channel through the Slack resource."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from orchestration.steps.base import StepConfig, StepFailure, StepOutput, StepRuntime, StepType


class Config(StepConfig):
    channel: str = Field(
        min_length=1, max_length=200, description="#channel-name, or a channel or user id"
    )
    text: str = Field(
        min_length=1,
        max_length=40000,
        description="The message; with blocks, the notification and fallback text",
    )
    blocks: list[dict[str, Any]] | None = Field(
        default=None, max_length=50, description="Block Kit blocks"
    )
    thread_ts: str | None = Field(default=None, description="Reply in this message's thread")
    connector: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        description="A slack connector of the organization to post with; empty: the "
        "deployment's Slack app ($SLACK_BOT_TOKEN)",
    )

    @field_validator("channel")
    @classmethod
    def _no_spaces(cls, value: str) -> str:
        value = value.strip()
        if not value or any(c.isspace() for c in value):
            raise ValueError("a channel name or id has no spaces")
        return value


class Output(StepOutput):
    channel: str = Field(description="The channel id the message went to")
    ts: str = Field(description="The message's timestamp: its id, and a thread_ts for replies")


def run(config: Config, runtime: StepRuntime) -> Output:
    token = None
    if config.connector:
        token = runtime.credentials.get("bot_token")
        if not token:
            raise StepFailure(f"connector '{config.connector}' has no bot_token")
    answer = runtime.resources["slack"].post_message(
        channel=config.channel,
        text=config.text,
        blocks=config.blocks,
        thread_ts=config.thread_ts,
        token=token,
        token_source=f"connector '{config.connector}'" if config.connector else None,
    )
    return Output(channel=str(answer.get("channel") or config.channel), ts=str(answer.get("ts")))


STEP = StepType(
    name="slack.post_message",
    title="Post to Slack",
    description="Post a message to a Slack channel, optionally with blocks or in a thread.",
    config_model=Config,
    output_model=Output,
    run=run,
    resources=("slack",),
    category="connector",
    connector_kind="slack",
)
