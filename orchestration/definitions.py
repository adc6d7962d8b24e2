"""Dagster code location entry point.

`defs` is the one location of workspace.yaml (FLOWPILOT_CODE_SHARDS=1). With N > 1 shards the
generated workspace (flowpilot/shards.py) names one attribute per location, `shard_<i>_of_<N>`:
the repository of the organizations in shard i. Each is built when first asked for, so a code
server or run worker reads only its own shard's published-job index. `reload` builds one again
in this process (FlowPilot's code server, orchestration/code_server.py), reusing the jobs of
versions it has already built.
"""

from functools import cache

from dagster import JobDefinition, RepositoryDefinition

from flowpilot.shards import parse_attribute
from orchestration.repository import make_repository
from resources.control_plane import ControlPlaneResource

# {(shard, shards): {version id: job}}: the jobs built in this process, reused by `reload`.
_built_jobs: dict[tuple[int, int], dict[int, JobDefinition]] = {}


@cache
def shard_repository(shard: int, shards: int) -> RepositoryDefinition:
    built = _built_jobs.setdefault((shard, shards), {})
    return make_repository(ControlPlaneResource(), shard=shard, shards=shards, built_jobs=built)


def shard_of_attribute(name: str) -> tuple[int, int]:
    """(shard, shards) of a location attribute: `defs` or `shard_<i>_of_<N>`."""
    if name == "defs":
        return 0, 1
    if parsed := parse_attribute(name):
        return parsed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def reload(attribute: str) -> RepositoryDefinition:
    """The repository behind `attribute` read again from the control plane: a new published-job
    index, schedules and sensors; the jobs of versions already built here are reused."""
    shard, shards = shard_of_attribute(attribute)
    shard_repository.cache_clear()
    return shard_repository(shard, shards)


def __getattr__(name: str) -> RepositoryDefinition:
    return shard_repository(*shard_of_attribute(name))
