#!/usr/bin/env python
"""Code-location benchmark: FlowPilot's Dagster code location(s) over real published workflows in
a real database (a private FLOWPILOT_HOME with its own embedded PostgreSQL).

Setup: organizations, active workflows and their versions are bulk-inserted (5-step definitions
from bench/render.py, 50 workflows per organization), the way `workflow_publish` stores them.

(a) load: real code-server processes, one per code location: FlowPilot's own (--load-server
    flowpilot, the default: what `flowpilot up` and docker-compose run), timed once cold (no job
    snapshots kept) and --repeat times warm (orchestration/job_snapshots.py), or Dagster's
    `dagster code-server start` (--load-server dagster); each location is timed from the
    process start until it is LOADED as the webserver sees it: Dagster's own
    `GrpcServerCodeLocation` (the class the webserver and the daemon use) connects, lists the
    repository and fetches every job snapshot. Shards start
    together and load in parallel; the wall time and each shard's time are printed. The same
    load of an empty location is printed first: the fixed cost (interpreter, imports, Django).
      - 0 workflows, 1 location (the fixed cost)
      - --workflows (1,000) in one location
      - --many (10,000) across --shards (4) locations
(b) publish -> visible: `dagster dev` (webserver, daemon) and --code-server code servers
    (flowpilot: FlowPilot's own, reloaded in place, what `flowpilot up` runs; dagster:
    `dagster dev`'s own) over --workflows workflows; --publishes times (20) a publish through
    `control_plane.workflows.services.workflow_publish` (new workflows and new versions of
    existing ones, alternately), which reloads the code location on commit; meanwhile the Dagster
    GraphQL API is polled (`pipelineOrError`) until the job shows the new version. p50/p95.
--inplace: publish -> visible through FlowPilot's own code server (orchestration/code_server.py),
    which reloads in place, measured as Dagster's GrpcServerCodeLocation sees it.
--profile: where a location's load time goes, in one fresh process over the real database:
    imports, Django, the index query, make_repository, building the jobs, RepositorySnap, and
    serializing every JobDataSnap (what the code server answers the webserver's ExternalJob);
    --cprofile FILE also writes cProfile stats of the last three (`python -m pstats FILE`).
    The profiling process is bench/code_location_profile.py.

Run from the project root (takes a few minutes; the machine's other load shows in the figures):

    .venv/bin/python bench/code_location.py
    .venv/bin/python bench/code_location.py --workflows 1000 --many 10000 --shards 4 8
    .venv/bin/python bench/code_location.py --skip-publish --profile
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import database_and_children, free_port, machine, percentile, private_home
from code_location_profile import run_profile

WORKFLOWS_PER_ORG = 50
REPOSITORY = "flowpilot"


# --- data ---------------------------------------------------------------------------------------


def bulk_publish(start: int, count: int) -> None:
    """Insert `count` active workflows with one version each (indexes start..start+count-1),
    50 per organization, as system writes (bulk inserts; the services would take minutes)."""
    from django.db import transaction
    from render import synthetic_definition

    from control_plane.core.tenancy import system_context
    from control_plane.organizations.models import Organization
    from control_plane.workflows.models import Workflow, WorkflowVersion
    from orchestration.steps.definition import content_hash

    started = time.monotonic()
    with system_context(), transaction.atomic(using="owner"):
        first_org, last_org = start // WORKFLOWS_PER_ORG, (start + count - 1) // WORKFLOWS_PER_ORG
        existing = dict(
            Organization.objects.using("owner")
            .filter(slug__startswith="bench-")
            .values_list("slug", "pk")
        )
        new = [
            Organization(name=f"Bench {n}", slug=f"bench-{n:04d}")
            for n in range(first_org, last_org + 1)
            if f"bench-{n:04d}" not in existing
        ]
        for organization in Organization.objects.using("owner").bulk_create(new):
            existing[organization.slug] = organization.pk
        workflows = []
        definitions = {}
        for index in range(start, start + count):
            definitions[index] = synthetic_definition(index)
            workflows.append(
                Workflow(
                    organization_id=existing[f"bench-{index // WORKFLOWS_PER_ORG:04d}"],
                    name=f"Workflow {index}",
                    slug=f"w{index:05d}",
                    status=Workflow.Status.ACTIVE,
                    draft_definition=definitions[index],
                )
            )
        workflows = Workflow.objects.using("owner").bulk_create(workflows, batch_size=1000)
        WorkflowVersion.objects.using("owner").bulk_create(
            [
                WorkflowVersion(
                    organization_id=workflow.organization_id,
                    workflow=workflow,
                    number=1,
                    definition=definitions[index],
                    content_hash=content_hash(definitions[index]),
                )
                for index, workflow in zip(range(start, start + count), workflows, strict=True)
            ],
            batch_size=1000,
        )
    print(f"inserted {count:,} published workflows in {time.monotonic() - started:.1f} s")
    sys.stdout.flush()


# --- (a) load through real code servers ----------------------------------------------------------


def _code_server_args(cfg: Any, server: str, shard: int, shards: int, port: int) -> list[str]:
    """`dagster code-server start` (server "dagster") or FlowPilot's own (what `flowpilot up`
    and docker-compose run)."""
    import dataclasses

    from flowpilot import processes
    from flowpilot import shards as shards_module

    if server == "flowpilot":
        return processes.code_server_args(dataclasses.replace(cfg, code_shards=shards), shard, port)
    return [
        processes.bin_path("dagster"),
        "code-server",
        "start",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-m",
        "orchestration.definitions",
        "-a",
        shards_module.attribute(shard, shards),
        "--location-name",
        shards_module.location_name(shard, shards),
    ]


def _load_as_webserver(location: str, port: int, started: float, timeout: float) -> dict:
    """Connect to the code server as the webserver does, retrying until it answers; returns the
    seconds from `started` (its process start) to the loaded location, and the job count."""
    from dagster import DagsterInstance
    from dagster._core.remote_origin import GrpcServerCodeLocationOrigin
    from dagster._core.remote_representation.code_location import GrpcServerCodeLocation

    origin = GrpcServerCodeLocationOrigin(host="127.0.0.1", port=port, location_name=location)
    deadline = started + timeout
    last_error: Exception | None = None
    with DagsterInstance.ephemeral() as instance:
        while time.monotonic() < deadline:
            try:
                loaded = GrpcServerCodeLocation(
                    origin=origin, instance=instance, host="127.0.0.1", port=port,
                    watch_server=False,
                )  # fmt: skip
            except Exception as exc:  # not serving yet, or still loading its code
                last_error = exc
                time.sleep(0.05)
                continue
            seconds = time.monotonic() - started
            repository = loaded.get_repository(REPOSITORY)
            jobs = len(repository.get_all_jobs())
            loaded.cleanup()
            return {"location": location, "seconds": seconds, "jobs": jobs}
    raise SystemExit(f"{location} not loaded in {timeout:.0f}s: {last_error}")


def measure_load(
    cfg: Any, shards: int, log_dir: Path, timeout: float, server: str, *, cold: bool = False
) -> dict:
    """Start one code server per shard at once; time each until loaded; stop them. `cold`:
    FlowPilot's code servers start without kept job snapshots (the store is emptied first)."""
    import shutil

    from flowpilot import processes

    if cold and cfg.snapshot_cache:
        shutil.rmtree(cfg.snapshot_cache, ignore_errors=True)
    env = processes.child_env(cfg, FLOWPILOT_CODE_SHARDS=str(shards))
    ports = [free_port() for _ in range(shards)]
    children = []
    try:
        started = time.monotonic()
        for shard, port in enumerate(ports):
            log = log_dir / f"code-server-{server}-{shards}-{shard}.log"
            args = _code_server_args(cfg, server, shard, shards, port)
            children.append(processes.spawn(args, env, log_file=log))
        from flowpilot.shards import location_name

        with ThreadPoolExecutor(max_workers=shards) as pool:
            results = list(
                pool.map(
                    lambda item: _load_as_webserver(
                        location_name(item[0], shards), item[1], started, timeout
                    ),
                    enumerate(ports),
                )
            )
        wall = time.monotonic() - started
    finally:
        for child in children:
            processes.stop(child, timeout=5)
    return {"shards": shards, "wall": wall, "locations": results}


def load_runs(cfg: Any, shards: int, log_dir: Path, args: Any) -> list[tuple[str, list[dict]]]:
    """Labelled load measurements: for FlowPilot's code servers one cold start (no kept
    snapshots) and --repeat warm ones; for Dagster's, --repeat starts."""
    if args.load_server == "dagster":
        runs = [
            measure_load(cfg, shards, log_dir, args.timeout, "dagster") for _ in range(args.repeat)
        ]
        return [("dagster code-server start", runs)]
    cold = [measure_load(cfg, shards, log_dir, args.timeout, "flowpilot", cold=True)]
    warm = [
        measure_load(cfg, shards, log_dir, args.timeout, "flowpilot") for _ in range(args.repeat)
    ]
    return [("FlowPilot code server, cold", cold), ("FlowPilot code server, warm", warm)]


def report_load(title: str, runs: list[dict]) -> None:
    walls = [run["wall"] for run in runs]
    print(f"\n{title}")
    for number, run in enumerate(runs, 1):
        per = "  ".join(
            f"{r['location']}: {r['seconds']:.2f} s ({r['jobs']:,} jobs)" for r in run["locations"]
        )
        print(f"  run {number}: wall {run['wall']:.2f} s   {per}")
    if len(runs) > 1:
        print(f"  median wall {statistics.median(walls):.2f} s")
    sys.stdout.flush()


# --- (b) publish -> visible through dagster dev --------------------------------------------------

JOB_QUERY = """
query Job($selector: PipelineSelector!) {
  pipelineOrError(params: $selector) {
    __typename
    ... on Pipeline { tags { key value } }
  }
}
"""

WORKSPACE_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""


def _graphql(client: Any, query: str, variables: dict | None = None) -> dict:
    body = client.post("/graphql", json={"query": query, "variables": variables or {}}).json()
    if body.get("errors"):
        raise RuntimeError(body["errors"])
    return body["data"]


def _locations_loaded(client: Any) -> bool:
    data = _graphql(client, WORKSPACE_QUERY)["workspaceOrError"]
    entries = data.get("locationEntries") or []
    return bool(entries) and all(
        entry["loadStatus"] == "LOADED"
        and entry["locationOrLoadError"]["__typename"] == "RepositoryLocation"
        for entry in entries
    )


def _job_version(client: Any, location: str, job_name: str) -> int | None:
    selector = {
        "repositoryLocationName": location,
        "repositoryName": REPOSITORY,
        "pipelineName": job_name,
    }
    result = _graphql(client, JOB_QUERY, {"selector": selector})["pipelineOrError"]
    if result["__typename"] != "Pipeline":
        return None
    tags = {tag["key"]: tag["value"] for tag in result["tags"]}
    return int(tags.get("flowpilot/version", 0))


def _new_workflow(organization: Any, slug: str, seed: int) -> Any:
    """A draft workflow (the synthetic definition number `seed`), as the API creates one; the
    caller sets the organization's tenant context."""
    from render import synthetic_definition

    from control_plane.workflows import services

    return services.workflow_create(
        organization=organization,
        created_by=None,
        name=slug.replace("-", " ").capitalize(),
        slug=slug,
        definition=synthetic_definition(seed),
    )


def measure_publishes(
    cfg: Any,
    shards: int,
    count: int,
    children: list,
    log_dir: Path,
    run: int,
    code_server: str = "flowpilot",
    interval: float = 0.0,
) -> dict:
    """`dagster dev` over `shards` locations; `count` publishes, `interval` s apart, in
    organization bench-0000
    (run number `run` of this benchmark: each run changes other existing workflows).
    `code_server`: "flowpilot" (FlowPilot's code servers, one per shard, as `flowpilot up`
    runs them) or "dagster" (`dagster dev`'s own)."""
    import dataclasses

    import httpx
    from django.conf import settings
    from render import synthetic_definition

    from control_plane.core import dagster
    from control_plane.core.tenancy import tenant_context
    from control_plane.organizations.models import Organization
    from control_plane.workflows import services
    from control_plane.workflows.models import Workflow
    from flowpilot import processes
    from flowpilot import shards as shards_module
    from orchestration.steps.definition import job_name_for

    cfg = dataclasses.replace(cfg, code_shards=shards, code_server=code_server)
    settings.FLOWPILOT_CODE_SHARDS = shards  # this process publishes: it names the location
    env = processes.child_env(cfg, FLOWPILOT_CODE_SHARDS=str(shards))
    log = log_dir / f"dagster-dev-{shards}-{code_server}.log"
    started = time.monotonic()
    workspace = None
    servers = []
    if code_server == "flowpilot":
        ports = [processes.free_port() for _ in range(shards)]
        for shard, port in enumerate(ports):
            server_log = log_dir / f"code-server-{shard}-of-{shards}.log"
            args = processes.code_server_args(cfg, shard, port)
            servers.append(processes.spawn(args, env, log_file=server_log))
        for port in ports:
            processes.wait_until(lambda port=port: processes.code_server_ready(port), timeout=600)
        workspace = shards_module.grpc_workspace_file(cfg, ports)
    children.append(processes.spawn(processes.dagster_dev_args(cfg, workspace), env, log_file=log))
    children.extend(servers)
    client = httpx.Client(base_url=cfg.dagster_url, timeout=30)
    if not processes.wait_until(lambda: _locations_loaded(client), timeout=600, interval=0.2):
        raise SystemExit(f"dagster dev did not load its locations; see {log}")
    up = time.monotonic() - started
    print(
        f"\ndagster dev with {shards} location(s) ({code_server} code servers) up and loaded"
        f" after {up:.1f} s"
    )
    sys.stdout.flush()

    organization = Organization.objects.get(slug="bench-0000")
    location = dagster.code_location_for(organization.slug)
    with tenant_context(organization.pk):  # the benchmark acts as the organization (RLS)
        existing = list(
            Workflow.objects.filter(organization=organization, slug__startswith="w")
            .order_by("id")
            .values_list("pk", flat=True)
        )
    visible: list[float] = []
    returned: list[float] = []
    answered: list[float] = []  # the reload's GraphQL call answered (the webserver reloaded)
    reload_location = dagster.reload_location

    def timed_reload(name: str) -> bool:
        result = reload_location(name)
        answered.append(time.monotonic() - t0)
        return result

    dagster.reload_location = timed_reload
    for attempt in range(count):
        time.sleep(interval)
        with tenant_context(organization.pk):
            if attempt % 2 == 0:
                workflow = _new_workflow(
                    organization, f"published-{shards}-{attempt}", 100_000 + attempt
                )
                expected = 1
            else:
                workflow = Workflow.objects.get(pk=existing[run * count + attempt])
                services.workflow_update(
                    workflow=workflow, draft_definition=synthetic_definition(200_000 + attempt)
                )
                expected = 2
        job_name = job_name_for(organization.slug, workflow.slug)

        def publish(workflow: Workflow, t0: float) -> None:
            with tenant_context(organization.pk):
                services.workflow_publish(workflow=workflow, published_by=None)
            returned.append(time.monotonic() - t0)

        t0 = time.monotonic()
        thread = threading.Thread(target=publish, args=(workflow, t0))
        thread.start()
        while True:
            version = _job_version(client, location, job_name)
            if version == expected:
                visible.append(time.monotonic() - t0)
                break
            if time.monotonic() - t0 > 600:
                raise SystemExit(f"{job_name} v{expected} not visible after 600 s")
            time.sleep(0.05)
        thread.join()
        dagster.wait_for_reloads(600)
        print(
            f"  publish {attempt + 1:>2}: {job_name} v{expected} visible after"
            f" {visible[-1]:.2f} s (publish call returned after {returned[-1]:.2f} s,"
            f" reload answered after {answered[-1]:.2f} s)"
        )
        sys.stdout.flush()
    dagster.reload_location = reload_location
    client.close()
    return {"visible": visible, "returned": returned, "answered": answered}


def report_publishes(result: dict, workflows: int, shards: int) -> None:
    visible, returned = result["visible"], result["returned"]
    print(
        f"\npublish -> job visible in Dagster GraphQL, {len(visible)} publishes,"
        f" {workflows:,} workflows in {shards} location(s)"
    )
    print(
        f"  visible   p50 {percentile(visible, 0.5):.2f} s  p95 {percentile(visible, 0.95):.2f} s"
        f"  max {max(visible):.2f} s"
    )
    print(
        f"  publish call (the reload is queued after commit) p50 {percentile(returned, 0.5):.2f} s"
        f"  p95 {percentile(returned, 0.95):.2f} s"
    )
    answered = result["answered"]
    print(
        f"  reload answered by the webserver p50 {percentile(answered, 0.5):.2f} s"
        f"  p95 {percentile(answered, 0.95):.2f} s"
    )


# --- publish -> visible through FlowPilot's code server (in-place reload) ------------------------


def measure_inplace(cfg: Any, count: int, children: list, log_dir: Path) -> dict:
    """`python -m orchestration.code_server` over the one location; `count` publishes in
    bench-0000 (new workflows), each followed by what the webserver does on a reload: Dagster's
    GrpcServerCodeLocationOrigin.reload_location (ReloadCode, then the repository fetched
    again). Timed from the publish until the reloaded location lists the new job."""
    from dagster import DagsterInstance
    from dagster._core.remote_origin import GrpcServerCodeLocationOrigin

    from control_plane.core.tenancy import tenant_context
    from control_plane.organizations.models import Organization
    from control_plane.workflows import services
    from flowpilot import processes
    from orchestration.steps.definition import job_name_for

    port = free_port()
    env = processes.child_env(cfg, FLOWPILOT_CODE_SHARDS="1")
    log = log_dir / "flowpilot-code-server.log"
    started = time.monotonic()
    args = [sys.executable, "-m", "orchestration.code_server", "--port", str(port)]
    children.append(processes.spawn(args, env, log_file=log))
    _load_as_webserver(REPOSITORY, port, started, 600)
    print(f"\nFlowPilot code server up and loaded after {time.monotonic() - started:.1f} s")
    origin = GrpcServerCodeLocationOrigin(host="127.0.0.1", port=port, location_name=REPOSITORY)
    organization = Organization.objects.get(slug="bench-0000")
    visible: list[float] = []
    with DagsterInstance.ephemeral() as instance:
        for attempt in range(count):
            with tenant_context(organization.pk):
                workflow = _new_workflow(organization, f"in-place-{attempt}", 300_000 + attempt)
            job_name = job_name_for(organization.slug, workflow.slug)
            t0 = time.monotonic()
            with tenant_context(organization.pk):
                services.workflow_publish(workflow=workflow, published_by=None)
            t1 = time.monotonic()
            # What reload_location does, in its two parts: ReloadCode, then a fresh location.
            origin.create_client().reload_code(timeout=instance.code_server_reload_timeout)
            t2 = time.monotonic()
            with origin.create_location(instance) as location:
                jobs = location.get_repository(REPOSITORY).get_all_jobs()
                if job_name not in {job.name for job in jobs}:
                    raise SystemExit(f"{job_name} not in the reloaded location")
            visible.append(time.monotonic() - t0)
            print(
                f"  publish {attempt + 1:>2}: {job_name} visible after {visible[-1]:.2f} s"
                f" (publish {t1 - t0:.2f} s, ReloadCode {t2 - t1:.2f} s,"
                f" location fetched {visible[-1] - (t2 - t0):.2f} s)"
            )
            sys.stdout.flush()
    processes.stop(children.pop())
    return {"visible": visible}


# --- driver -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflows", type=int, default=1_000, help="one location; publishes")
    parser.add_argument("--many", type=int, default=10_000, help="across shards; 0 to skip")
    parser.add_argument("--shards", type=int, nargs="+", default=[4])
    parser.add_argument("--repeat", type=int, default=2, help="load measurements each")
    parser.add_argument("--publishes", type=int, default=20)
    parser.add_argument("--publish-shards", type=int, nargs="+", default=[1, 4])
    parser.add_argument(
        "--publish-interval", type=float, default=0.0, help="seconds between publishes"
    )
    parser.add_argument("--skip-publish", action="store_true")
    parser.add_argument(
        "--inplace", action="store_true", help="publish -> visible with FlowPilot's code server"
    )
    parser.add_argument(
        "--code-server",
        choices=["flowpilot", "dagster"],
        default="flowpilot",
        help="code servers under dagster dev for the publishes (flowpilot: as flowpilot up)",
    )
    parser.add_argument(
        "--load-server",
        choices=["flowpilot", "dagster"],
        default="flowpilot",
        help="code servers for the load figures (flowpilot: cold, then warm job snapshots)",
    )
    parser.add_argument("--profile", action="store_true", help="where the load time goes")
    parser.add_argument(
        "--cprofile", type=Path, help="with --profile: cProfile stats of building and snapshots"
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--home", type=Path, help="FLOWPILOT_HOME to use (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep FLOWPILOT_HOME (and its logs)")
    args = parser.parse_args(argv)

    print(f"FlowPilot code-location benchmark: {machine()}")
    with private_home(args.home, args.keep) as home, database_and_children() as (cfg, children):
        log_dir = home / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        for label, runs in load_runs(cfg, 1, log_dir, args):
            report_load(f"load, empty location (fixed cost), {label}", runs)

        bulk_publish(0, args.workflows)
        for label, runs in load_runs(cfg, 1, log_dir, args):
            report_load(f"load, {args.workflows:,} workflows in one location, {label}", runs)
        if args.profile:
            run_profile(0, 1, args.cprofile)

        if args.inplace:
            result = measure_inplace(cfg, args.publishes, children, log_dir)
            visible = result["visible"]
            print(
                f"\npublish -> job in the reloaded location, FlowPilot code server (in place),"
                f" {len(visible)} publishes, {args.workflows:,} workflows: p50"
                f" {percentile(visible, 0.5):.2f} s  p95 {percentile(visible, 0.95):.2f} s"
            )
        if not args.skip_publish:
            from flowpilot import processes

            for run, shards in enumerate(args.publish_shards):
                result = measure_publishes(
                    cfg,
                    shards,
                    args.publishes,
                    children,
                    log_dir,
                    run,
                    args.code_server,
                    args.publish_interval,
                )
                report_publishes(result, args.workflows, shards)
                while children:
                    processes.stop(children.pop())

        if args.many > args.workflows:
            bulk_publish(args.workflows, args.many - args.workflows)
            for shards in args.shards:
                for label, runs in load_runs(cfg, shards, log_dir, args):
                    report_load(
                        f"load, {args.many:,} workflows across {shards} locations, {label}", runs
                    )
                if args.profile:
                    run_profile(0, shards)
    return 0


if __name__ == "__main__":
    sys.exit(main())
