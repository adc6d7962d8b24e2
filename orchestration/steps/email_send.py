"""email.send: send an email (plain text, optionally with an HTML part) through the email
resource, i.e. Django's email backend."""

from __future__ import annotations

import re
from email.utils import getaddresses
from typing import Any

from pydantic import Field, field_validator

from orchestration.steps.base import StepConfig, StepOutput, StepRuntime, StepType

MAX_RECIPIENTS = 50
# Deliberately loose (the mail server has the last word); it catches templating slips such as
# an empty value, a whole JSON object or a missing domain before anything is sent.
_ADDRESS = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\".]+$")


def _addresses(value: Any) -> Any:
    """A list of addresses, or one string with several separated by commas or semicolons (what a
    rendered `{{ inputs.email }}` or a form field gives)."""
    if isinstance(value, str):
        value = [part for part in re.split(r"[,;\n]", value) if part.strip()]
    if not isinstance(value, list):
        return value  # pydantic reports the type
    result = []
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"an address must be a string, got {type(item).__name__}")
        parsed = getaddresses([item])
        address = parsed[0][1] if len(parsed) == 1 else ""
        if not _ADDRESS.match(address):
            raise ValueError(f"not an email address: {item.strip()[:100]!r}")
        result.append(item.strip())
    return result


class Config(StepConfig):
    to: list[str] = Field(
        min_length=1,
        max_length=MAX_RECIPIENTS,
        description="Recipients: a list, or one string separated by commas",
    )
    cc: list[str] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    subject: str = Field(min_length=1, max_length=998)
    body: str = Field(description="The plain-text body")
    html: str | None = Field(default=None, description="An HTML alternative to the text body")

    @field_validator("to", "cc", mode="before")
    @classmethod
    def _split_addresses(cls, value: Any) -> Any:
        return _addresses(value)

    @field_validator("subject")
    @classmethod
    def _one_line(cls, value: str) -> str:
        # A rendered template often ends with a newline; inside, one is a header injection.
        value = value.strip()
        if "\n" in value or "\r" in value:
            raise ValueError("the subject must be one line")
        return value


class Output(StepOutput):
    recipients: list[str] = Field(description="Every address the message went to (to, then cc)")
    message_id: str = Field(description="The Message-ID header of the sent message")


def run(config: Config, runtime: StepRuntime) -> Output:
    message_id = runtime.resources["email"].send(
        to=config.to, cc=config.cc, subject=config.subject, body=config.body, html=config.html
    )
    runtime.log.info(f"email {message_id} sent to {len(config.to) + len(config.cc)} recipient(s)")
    return Output(recipients=[*config.to, *config.cc], message_id=message_id)


STEP = StepType(
    name="email.send",
    title="Send email",
    description="Send an email with a text body and an optional HTML part.",
    config_model=Config,
    output_model=Output,
    run=run,
    resources=("email",),
    category="connector",
)
