"""FlowPilot's code server: Dagster's own gRPC code server (what `dagster api grpc` runs) for one
FlowPilot code location, except that a reload happens in place.

Dagster reloads a `grpc_server` location by calling the server's ReloadCode and then fetching
its repository again; `dagster code-server start` answers ReloadCode by starting a new
subprocess that imports everything and renders every job again (bench/code_location.py: about
11 s for 1,000 workflows on 2 cores). Here ReloadCode rebuilds the repository in this process
(`orchestration.definitions.reload`): the published-job index, schedules and sensors are read
again, the jobs of versions already built are reused with their cached snapshots (a published
version never changes), and only new versions are rendered. The new server id tells the
webserver and the daemon that the location changed. If the rebuild fails, the previous
definitions stay and the error is logged.

The repository snapshot and every workflow job's snapshot are answered from a store kept on disk
across restarts (orchestration/job_snapshots.py, FLOWPILOT_SNAPSHOT_CACHE), so neither a cold
start nor the webserver's refetch after a reload renders and serializes every job again; a job
is built only when it is new or a run or execution plan needs it.

Runs are not executed here (the warm run launcher forks its own workers), so replacing the
definitions never touches a run in flight.

    python -m orchestration.code_server --port 4000 [--attribute defs] [--location-name flowpilot]
    python -m orchestration.code_server --warm   # keep every location's job snapshots, exit
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger("flowpilot.code_server")

CODE_MODULE = "orchestration.definitions"


def _server_class() -> type:
    from dagster import _check as check
    from dagster._grpc.__generated__ import dagster_api_pb2
    from dagster._grpc.server import DagsterApiServer

    class FlowPilotApiServer(DagsterApiServer):
        """DagsterApiServer whose ReloadCode rebuilds the FlowPilot repository in place."""

        def __init__(self, *args: Any, attribute: str, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._attribute = attribute

        def _snapshot_store(self) -> Any:
            from orchestration import definitions

            return definitions.snapshot_store(*definitions.shard_of_attribute(self._attribute))

        def _get_serialized_external_repository_data(self, request: Any) -> str:
            from dagster._core.remote_origin import RemoteRepositoryOrigin
            from dagster._core.remote_representation.external_data import RepositoryErrorSnap
            from dagster._serdes import deserialize_value, serialize_value
            from dagster._utils.error import serializable_error_info_from_exc_info

            from orchestration.job_snapshots import repository_snapshot

            store = self._snapshot_store()
            if store is None or not request.defer_snapshots:
                return super()._get_serialized_external_repository_data(request)
            try:
                origin = deserialize_value(
                    request.serialized_repository_python_origin, RemoteRepositoryOrigin
                )
                repository = self._get_repo_for_origin(origin)
                return serialize_value(repository_snapshot(repository, store))
            except Exception:
                log.exception("answering the repository snapshot failed")
                error = serializable_error_info_from_exc_info(sys.exc_info())
                return serialize_value(RepositoryErrorSnap(error=error))

        def ExternalJob(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC name)
            from dagster._core.remote_origin import RemoteRepositoryOrigin
            from dagster._serdes import deserialize_value

            from orchestration.job_snapshots import serialized_job_data

            store = self._snapshot_store()
            if store is not None:
                try:
                    origin = deserialize_value(
                        request.serialized_repository_origin, RemoteRepositoryOrigin
                    )
                    repository = self._get_repo_for_origin(origin)
                    data = serialized_job_data(repository, request.job_name, store)
                except Exception:  # Dagster's own answer below reports it
                    log.exception(
                        "answering the snapshot of %s from the store failed", request.job_name
                    )
                    data = None
                if data is not None:
                    return dagster_api_pb2.ExternalJobReply(serialized_job_data=data)
            return super().ExternalJob(request, context)

        def ReloadCode(self, _request: Any, _context: Any) -> Any:  # noqa: N802 (gRPC name)
            from orchestration import definitions

            started = time.monotonic()
            with self._reload_lock:
                try:
                    repository = definitions.reload(self._attribute)
                    repository.load_all_definitions()
                    loaded = check.not_none(self._loaded_repositories)
                    self._loaded_repositories = loaded.update_repo_defs(
                        {repository.name: repository}
                    )
                    self._server_id = str(uuid.uuid4())
                except Exception:
                    log.exception(
                        "reloading %s in place failed; kept the previous definitions",
                        self._attribute,
                    )
                else:
                    log.info(
                        "reloaded %s in place in %.2fs (%d jobs)",
                        self._attribute,
                        time.monotonic() - started,
                        len(repository.job_names),
                    )
            return dagster_api_pb2.ReloadCodeReply()

    return FlowPilotApiServer


def serve(
    *,
    port: int | None,
    socket: str | None = None,
    host: str = "localhost",
    attribute: str = "defs",
    location_name: str = "flowpilot",
    working_directory: str | None = None,
    max_workers: int | None = None,
    snapshot_cache: Path | None = None,
) -> None:
    """Serve one location until interrupted (SIGINT/SIGTERM) or shut down over gRPC. Job
    snapshots are kept in `snapshot_cache` (in memory when None)."""
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.utils import FuturesAwareThreadPoolExecutor
    from dagster._grpc.server import DagsterGrpcServer

    from orchestration import definitions

    definitions.use_snapshot_store(snapshot_cache, location_name)

    origin = LoadableTargetOrigin(
        executable_path=sys.executable,
        module_name=CODE_MODULE,
        attribute=attribute,
        working_directory=working_directory or os.getcwd(),
    )
    termination = threading.Event()
    executor = FuturesAwareThreadPoolExecutor(max_workers=max_workers)
    servicer = _server_class()(
        server_termination_event=termination,
        logger=log,
        server_threadpool_executor=executor,
        loadable_target_origin=origin,
        location_name=location_name,
        attribute=attribute,
    )
    server = DagsterGrpcServer(
        server_termination_event=termination,
        dagster_api_servicer=servicer,
        logger=log,
        threadpool_executor=executor,
        host=host,
        port=port,
        socket=socket,
    )
    log.info("FlowPilot code server for %s (%s) on %s", location_name, attribute, port or socket)
    try:
        server.serve()
    except KeyboardInterrupt:
        log.info("code server interrupted")


def warm(snapshot_cache: Path | None, shard_count: int) -> list[tuple[str, int, int]]:
    """Render and keep the snapshot of every published job of every location (of
    `shard_count`) not kept yet, so code servers started afterwards (after an upgrade: a new
    code fingerprint) load warm. Returns (location, jobs, rendered) per location."""
    from flowpilot import shards
    from orchestration import definitions
    from orchestration.job_snapshots import keep_all

    done = []
    for shard in range(shard_count):
        location = shards.location_name(shard, shard_count)
        definitions.use_snapshot_store(snapshot_cache, location)
        store = definitions.snapshot_store(shard, shard_count)
        jobs, rendered = keep_all(definitions.shard_repository(shard, shard_count), store)
        done.append((location, jobs, rendered))
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", type=int)
    where.add_argument("--socket")
    where.add_argument(
        "--warm",
        action="store_true",
        help="keep every location's job snapshots (FLOWPILOT_CODE_SHARDS), then exit",
    )
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--attribute", default="defs", help="defs or shard_<i>_of_<N>")
    parser.add_argument("--location-name", default="flowpilot")
    parser.add_argument("--working-directory")
    parser.add_argument("--max-workers", type=int)
    args = parser.parse_args(argv)
    from flowpilot import config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # Django's logging settings (applied when the location loads) may quieten the root logger;
    # the server's own lines (loads, reloads, snapshots) stay.
    logging.getLogger("flowpilot").setLevel(logging.INFO)
    cfg = config.load()
    if args.warm:
        for location, jobs, rendered in warm(cfg.snapshot_cache, cfg.code_shards):
            log.info("%s: %d jobs, %d snapshots rendered and kept", location, jobs, rendered)
        return 0
    serve(
        port=args.port,
        socket=args.socket,
        host=args.host,
        attribute=args.attribute,
        location_name=args.location_name,
        working_directory=args.working_directory,
        max_workers=args.max_workers,
        snapshot_cache=cfg.snapshot_cache,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
