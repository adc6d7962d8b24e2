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

Runs are not executed here (the warm run launcher forks its own workers), so replacing the
definitions never touches a run in flight.

    python -m orchestration.code_server --port 4000 [--attribute defs] [--location-name flowpilot]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
import uuid
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
) -> None:
    """Serve one location until interrupted (SIGINT/SIGTERM) or shut down over gRPC."""
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.utils import FuturesAwareThreadPoolExecutor
    from dagster._grpc.server import DagsterGrpcServer

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", type=int)
    where.add_argument("--socket")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--attribute", default="defs", help="defs or shard_<i>_of_<N>")
    parser.add_argument("--location-name", default="flowpilot")
    parser.add_argument("--working-directory")
    parser.add_argument("--max-workers", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    serve(
        port=args.port,
        socket=args.socket,
        host=args.host,
        attribute=args.attribute,
        location_name=args.location_name,
        working_directory=args.working_directory,
        max_workers=args.max_workers,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
