from __future__ import annotations

from typing import Any

import httpx
from dagster import ConfigurableResource


class HttpResource(ConfigurableResource):
    """Outbound HTTP for steps (httpx)."""

    user_agent: str = "FlowPilot/0.1 (+https://github.com/flowpilot)"
    default_timeout_seconds: float = 30.0
    follow_redirects: bool = True

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        json_body: Any = None,
        content: str | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        merged = {"User-Agent": self.user_agent, **(headers or {})}
        kwargs: dict[str, Any] = {"headers": merged, "params": params or None}
        if json_body is not None:
            kwargs["json"] = json_body
        elif content is not None:
            kwargs["content"] = content
        with httpx.Client(
            timeout=timeout or self.default_timeout_seconds,
            follow_redirects=self.follow_redirects,
        ) as client:
            return client.request(method, url, **kwargs)
