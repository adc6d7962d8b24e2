"""Slack's Web API through slack_sdk. The bot token is read from the environment when a call is
made, never from run config, so it stays out of Dagster's run storage and event log."""

from __future__ import annotations

import os
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr

from orchestration.steps.base import StepFailure

TOKEN_ENV = "SLACK_BOT_TOKEN"
API_URL_ENV = "SLACK_API_URL"
DEFAULT_API_URL = "https://slack.com/api/"

_AUTH_ERRORS = {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"}


class SlackError(StepFailure):
    """A Slack call failed; `code` is Slack's error string (`channel_not_found`, ...)."""

    def __init__(self, message: str, *, code: str = "", retry_after: float | None = None):
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


class SlackResource(ConfigurableResource):
    """Posts messages as the FlowPilot Slack app. `base_url` empty means $SLACK_API_URL, else the
    real Slack; tests point it at a local server that speaks the same API."""

    base_url: str = Field(default="", description=f"Web API root; empty: ${API_URL_ENV}")
    token_env_var: str = Field(default=TOKEN_ENV, description="Variable holding the bot token")
    timeout_seconds: int = 30

    _clients: dict[tuple[str, str], Any] = PrivateAttr(default_factory=dict)

    def api_url(self) -> str:
        url = self.base_url or os.environ.get(API_URL_ENV, "").strip() or DEFAULT_API_URL
        return url if url.endswith("/") else url + "/"

    def _client(self, token: str | None = None):
        """A client for `token` (a connector's, passed in by the step) or, without one, the
        token in the environment variable."""
        token = token or os.environ.get(self.token_env_var, "").strip()
        if not token:
            raise SlackError(
                f"Slack is not configured: set the {self.token_env_var} environment variable "
                "to the Slack app's bot token (xoxb-...)",
                code="not_configured",
            )
        key = (token, self.api_url())
        if key not in self._clients:
            from slack_sdk import WebClient  # heavy: only processes that post to Slack pay

            self._clients.clear()  # one token at a time: drop clients of a rotated token
            self._clients[key] = WebClient(
                token=token, base_url=key[1], timeout=self.timeout_seconds
            )
        return self._clients[key]

    def _call(
        self,
        method: str,
        body: dict[str, Any],
        channel: str | None,
        token: str | None = None,
        token_source: str | None = None,
    ) -> dict[str, Any]:
        from urllib.error import URLError

        from slack_sdk.errors import SlackApiError

        client = self._client(token)
        source = token_source or ("the connector" if token else self.token_env_var)
        try:
            return dict(client.api_call(method, json=body).data)
        except SlackApiError as exc:
            raise _slack_failure(method, channel, exc, source) from None
        except (URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SlackError(
                f"could not reach Slack at {self.api_url()}: {reason}", code="unreachable"
            ) from None

    def post_message(
        self,
        *,
        channel: str,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
        token: str | None = None,
        token_source: str | None = None,
    ) -> dict[str, Any]:
        """chat.postMessage; returns Slack's answer (`channel` id and message `ts`). `token`: a
        connector's bot token (`token_source` names it in errors) instead of the environment's;
        it is never logged nor put in an error message."""
        body: dict[str, Any] = {"channel": channel, "text": text}
        if blocks is not None:
            body["blocks"] = blocks
        if thread_ts:
            body["thread_ts"] = thread_ts
        return self._call("chat.postMessage", body, channel, token, token_source)

    def auth_test(self) -> dict[str, Any]:
        """auth.test: which workspace and bot the token belongs to (a connection check)."""
        return self._call("auth.test", {}, None)


def _slack_failure(method: str, channel: str | None, exc: Any, token_source: str) -> SlackError:
    response = exc.response
    data = response.data if isinstance(response.data, dict) else {}
    code = str(data.get("error") or f"http_{response.status_code}")
    where = f" {channel}" if channel else ""
    if code == "not_in_channel":
        message = (
            f"the FlowPilot Slack app is not a member of channel{where}: invite it to the "
            "channel (/invite @app) and run again"
        )
    elif code == "channel_not_found":
        message = (
            f"Slack channel{where} was not found, or the app cannot see it: check the name, "
            "or use the channel id (C...)"
        )
    elif code in _AUTH_ERRORS:
        message = f"Slack refused the bot token of {token_source} ({code}): check or replace it"
    elif code == "ratelimited" or response.status_code == 429:
        retry_after = _retry_after(response.headers)
        wait = f"retry after {retry_after:g}s" if retry_after is not None else "retry later"
        return SlackError(
            f"Slack rate-limited {method}: {wait}", code="ratelimited", retry_after=retry_after
        )
    elif code == "invalid_blocks":
        detail = "; ".join(data.get("errors") or [])
        message = f"Slack rejected the message blocks{': ' + detail if detail else ''}"
    else:
        message = f"Slack answered {method} with error '{code}'"
    return SlackError(message, code=code)


def _retry_after(headers: Any) -> float | None:
    for name in ("Retry-After", "retry-after"):
        value = (headers or {}).get(name)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            try:
                return float(value)
            except (TypeError, ValueError):
                return None
    return None
