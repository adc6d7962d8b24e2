"""The control plane's only door to Dagster: its GraphQL API over HTTP (no dagster import, so
the web process stays light)."""

from __future__ import annotations

import atexit
import logging
import threading
from functools import partial
from typing import Any

import httpx
from django.conf import settings
from django.db import transaction

from flowpilot.shards import location_name, shard_of

log = logging.getLogger(__name__)


class DagsterUnavailable(Exception):
    pass


def graphql(
    query: str, variables: dict[str, Any] | None = None, *, timeout: float | None = None
) -> dict[str, Any]:
    try:
        response = httpx.post(
            f"{settings.DAGSTER_URL}/graphql",
            json={"query": query, "variables": variables or {}},
            timeout=timeout or settings.DAGSTER_TIMEOUT_SECONDS,
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


def code_location_for(organization: int | str) -> str:
    """The Dagster code location that holds an organization's jobs, schedules and sensors,
    given its id or its slug: `flowpilot`, or with FLOWPILOT_CODE_SHARDS=N > 1 the location of
    its shard, `flowpilot-<i>` (flowpilot/shards.py). Launching or reloading through GraphQL
    must name this location."""
    shards = settings.FLOWPILOT_CODE_SHARDS
    if shards <= 1:
        return settings.DAGSTER_CODE_LOCATION
    if isinstance(organization, int):
        from control_plane.core.tenancy import system_database
        from control_plane.organizations.models import Organization

        slug = (
            Organization.objects.using(system_database())
            .filter(pk=organization)
            .values_list("slug", flat=True)
            .first()
        )
        if slug is None:
            raise ValueError(f"no organization {organization}")
        organization = slug
    return location_name(shard_of(organization, shards), shards)


# A reload answers once Dagster has started the location's new code server and loaded it: seconds
# to minutes for a big location. The reloader thread waits that long, so requests that arrive
# meanwhile become one more reload rather than a pile of them.
RELOAD_TIMEOUT_SECONDS = 300.0
EXIT_WAIT_SECONDS = 30.0  # at most this long, a process on its way out sends queued reloads


def reload_location(location: str) -> bool:
    """Reload one Dagster code location now and wait for it; True once Dagster answers that it
    is loaded. Best effort: if Dagster is down, it loads the current state when it starts."""
    try:
        result = graphql(RELOAD, {"location": location}, timeout=RELOAD_TIMEOUT_SECONDS)
    except DagsterUnavailable as exc:
        log.info("Dagster reload of %s failed (it loads on start): %s", location, exc)
        return False
    entry = result["reloadRepositoryLocation"]
    if entry.get("__typename") != "WorkspaceLocationEntry":
        log.warning("Dagster reload answered %s: %s", entry.get("__typename"), entry.get("message"))
        return False
    return True


class _Reloader:
    """Reloads run one at a time in a background thread, so a publish does not wait for
    Dagster; a location already waiting for its reload is not queued twice (a burst of
    publishes in one location costs one reload after the one in progress)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._pending: dict[str, None] = {}  # ordered set of locations
        self._thread: threading.Thread | None = None
        self._exit_hook = False

    def request(self, location: str) -> None:
        with self._lock:
            self._pending[location] = None
            self._idle.clear()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="dagster-reload", daemon=True
                )
                self._thread.start()
                if not self._exit_hook:  # a command that publishes and exits still reloads
                    atexit.register(self.wait, EXIT_WAIT_SECONDS)
                    self._exit_hook = True

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._thread = None
                    self._idle.set()
                    return
                location = next(iter(self._pending))
                del self._pending[location]
            try:
                reload_location(location)
            except Exception:  # never let the thread die with requests queued
                log.exception("Dagster reload of %s failed", location)

    def wait(self, timeout: float) -> bool:
        return self._idle.wait(timeout)


_reloader = _Reloader()


def reload_code_location(organization: int | str) -> None:
    """Have Dagster reload the code location that holds the organization's workflows (only that
    shard), so a newly published, paused or resumed job shows there without a restart. Runs in
    flight keep going: Dagster stops a replaced code server only once its runs have finished.
    Queued to a background thread: the caller does not wait for Dagster."""
    _reloader.request(code_location_for(organization))


def wait_for_reloads(timeout: float) -> bool:
    """Wait until every queued reload has been answered (tests, benchmarks); False on timeout."""
    return _reloader.wait(timeout)


def reload_on_commit(organization_id: int) -> None:
    """Reload the organization's code location once the current transaction commits (a job
    that is not committed yet would not be found by the code server)."""
    transaction.on_commit(partial(reload_code_location, organization_id))
