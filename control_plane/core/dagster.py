"""The control plane's only door to Dagster: its GraphQL API over HTTP (no dagster import, so
the web process stays light)."""

from __future__ import annotations

import logging
from typing import Any

import httpx
from django.conf import settings

log = logging.getLogger(__name__)


class DagsterUnavailable(Exception):
    pass


def graphql(query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    try:
        response = httpx.post(
            f"{settings.DAGSTER_URL}/graphql",
            json={"query": query, "variables": variables or {}},
            timeout=settings.DAGSTER_TIMEOUT_SECONDS,
        )
        response.raise_for_status()
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise DagsterUnavailable(f"Dagster GraphQL at {settings.DAGSTER_URL}: {exc}") from exc
    if body.get("errors"):
        raise DagsterUnavailable(str(body["errors"][0].get("message", body["errors"])))
    return body["data"]


def version() -> str:
    return graphql("{ version }")["version"]


RELOAD = """
mutation Reload($location: String!) {
  reloadRepositoryLocation(repositoryLocationName: $location) {
    __typename
    ... on WorkspaceLocationEntry { name loadStatus }
    ... on PythonError { message }
  }
}
"""


def reload_code_location() -> bool:
    """Ask Dagster to reload FlowPilot's code location so a newly published job appears.
    Best effort: if Dagster is down, it loads the new version when it starts."""
    try:
        result = graphql(RELOAD, {"location": settings.DAGSTER_CODE_LOCATION})
    except DagsterUnavailable as exc:
        log.info("Dagster not reachable, it loads new versions when it starts: %s", exc)
        return False
    entry = result["reloadRepositoryLocation"]
    if entry.get("__typename") != "WorkspaceLocationEntry":
        log.warning("Dagster reload answered %s: %s", entry.get("__typename"), entry.get("message"))
        return False
    return True
