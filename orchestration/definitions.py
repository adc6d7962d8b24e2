"""Dagster code location entry point.

`defs` is the one location of workspace.yaml (FLOWPILOT_CODE_SHARDS=1). With N > 1 shards the
generated workspace (flowpilot/shards.py) names one attribute per location, `shard_<i>_of_<N>`:
the repository of the organizations in shard i. Each is built when first asked for, so a code
server or run worker reads only its own shard's published-job index. `reload` builds one again
in this process (FlowPilot's code server, orchestration/code_server.py), reusing the jobs it has
already built. In a code server with a snapshot store (`use_snapshot_store`), loading the location
leaves unbuilt the jobs whose snapshots are kept (orchestration/job_snapshots.py).
"""

from functools import cache
from pathlib import Path

from dagster import JobDefinition, RepositoryDefinition

from flowpilot.shards import parse_attribute
from orchestration.job_snapshots import JobSnapshotStore, code_fingerprint
from orchestration.repository import default_resources, make_repository
from resources.control_plane import ControlPlaneResource

# {(shard, shards): {render stamp: job}}: the jobs built in this process, reused by `reload`.
_built_jobs: dict[tuple[int, int], dict[str, JobDefinition]] = {}
# {(shard, shards): store}: only in a code server that called `use_snapshot_store`.
_stores: dict[tuple[int, int], JobSnapshotStore] = {}
_store_settings: dict[str, object] = {}


def use_snapshot_store(directory: Path | None, location: str) -> None:
    """Keep job snapshots (in `directory`, or in memory when None) for the locations this
    process serves; called by the code server before it loads its location."""
    _store_settings.update(directory=directory, location=location)


def snapshot_store(shard: int, shards: int) -> JobSnapshotStore | None:
    if not _store_settings:
        return None
    if (shard, shards) not in _stores:
        fingerprint = code_fingerprint(default_resources(ControlPlaneResource()))
        _stores[shard, shards] = JobSnapshotStore(
            _store_settings["directory"], str(_store_settings["location"]), fingerprint
        )
    return _stores[shard, shards]


@cache
def shard_repository(shard: int, shards: int) -> RepositoryDefinition:
    built = _built_jobs.setdefault((shard, shards), {})
    store = snapshot_store(shard, shards)
    return make_repository(
        ControlPlaneResource(),
        shard=shard,
        shards=shards,
        built_jobs=built,
        deferred=store.has if store else None,
    )


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
