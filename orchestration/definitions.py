"""Dagster code location entry point.

`defs` is the one location of workspace.yaml (FLOWPILOT_CODE_SHARDS=1). With N > 1 shards the
generated workspace (flowpilot/shards.py) names one attribute per location, `shard_<i>_of_<N>`:
the repository of the organizations in shard i. Each is built when first asked for, so a code
server or run worker reads only its own shard's published-job index.
"""

from functools import cache

from dagster import RepositoryDefinition

from flowpilot.shards import parse_attribute
from orchestration.repository import make_repository
from resources.control_plane import ControlPlaneResource


@cache
def shard_repository(shard: int, shards: int) -> RepositoryDefinition:
    return make_repository(ControlPlaneResource(), shard=shard, shards=shards)


def __getattr__(name: str) -> RepositoryDefinition:
    if name == "defs":
        return shard_repository(0, 1)
    if parsed := parse_attribute(name):
        return shard_repository(*parsed)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
