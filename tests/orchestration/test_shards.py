"""Code-location shards (FLOWPILOT_CODE_SHARDS): which organization lands where, the workspace
Dagster loads, each shard's repository, and reloads that reach only the organization's shard."""

from __future__ import annotations

import importlib
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import yaml
from django.test import override_settings

from control_plane.core import dagster
from control_plane.core.tenancy import tenant_context
from control_plane.workflows import services
from control_plane.workflows.selectors import published_job_index, published_jobs
from control_plane.workflows.triggers import trigger_create
from flowpilot import config, processes, shards
from flowpilot.local_http import LocalHTTPServer
from orchestration.repository import make_repository
from orchestration.repository_data import workflow_data
from resources.control_plane import ControlPlaneResource
from tests.factories import THREE_STEPS, make_published_workflow

# The fixtures' organizations: acme is in shard 0 and globex in shard 3 of 4 (1 of 2).
ACME, GLOBEX = "acme", "globex"


# Assignment --------------------------------------------------------------------------------------


def test_an_organization_always_lands_in_the_same_shard():
    assert [shards.shard_of(ACME, 4), shards.shard_of(GLOBEX, 4)] == [0, 3]
    assert [shards.shard_of(ACME, 2), shards.shard_of(GLOBEX, 2)] == [0, 1]
    assert {shards.shard_of(slug, 1) for slug in (ACME, GLOBEX, "x")} == {0}


def test_organizations_spread_evenly_over_the_shards():
    counts = Counter(shards.shard_of(f"org-{n}", 8) for n in range(8000))
    assert set(counts) == set(range(8))
    assert all(800 < count < 1200 for count in counts.values()), counts


def test_location_and_attribute_names_round_trip():
    assert shards.location_name(0, 1) == "flowpilot" and shards.attribute(0, 1) == "defs"
    assert [shards.location_name(i, 3) for i in range(3)] == [
        "flowpilot-0",
        "flowpilot-1",
        "flowpilot-2",
    ]
    assert shards.parse_attribute(shards.attribute(2, 3)) == (2, 3)
    for bad in ("defs", "shard_3_of_3", "shard_x_of_2", "shard_0_of_0", "shard_1_of_2_"):
        assert shards.parse_attribute(bad) is None


@pytest.mark.parametrize("value", ["0", "-1", "two", "65", "1.5"])
def test_a_bad_shard_count_is_refused_with_the_variable_named(monkeypatch, value):
    monkeypatch.setenv("FLOWPILOT_CODE_SHARDS", value)
    with pytest.raises(ValueError, match="FLOWPILOT_CODE_SHARDS"):
        config.load()


@pytest.mark.parametrize("value", ["dagster-dev", "grpc", "FlowPilot"])
def test_a_bad_code_server_choice_is_refused_with_the_variable_named(monkeypatch, value):
    monkeypatch.setenv("FLOWPILOT_CODE_SERVER", value)
    with pytest.raises(ValueError, match="FLOWPILOT_CODE_SERVER"):
        config.load()


# Workspace ---------------------------------------------------------------------------------------


def _origins(path: Path) -> dict[str, tuple[str, str]]:
    """What Dagster itself reads from a workspace file: {location: (module, attribute)}."""
    from dagster._core.workspace.load import location_origins_from_yaml_paths

    return {
        origin.location_name: (
            origin.loadable_target_origin.module_name,
            origin.loadable_target_origin.attribute,
        )
        for origin in location_origins_from_yaml_paths([str(path)])
    }


def test_one_shard_keeps_the_static_workspace(monkeypatch, tmp_path):
    monkeypatch.setenv("FLOWPILOT_HOME", str(tmp_path))
    monkeypatch.delenv("FLOWPILOT_CODE_SHARDS", raising=False)
    cfg = config.load()
    path = shards.workspace_file(cfg)
    assert path == config.PROJECT_ROOT / "workspace.yaml"
    assert _origins(path) == {"flowpilot": ("orchestration.definitions", "defs")}
    assert str(path) in processes.dagster_dev_args(cfg)


def test_flowpilot_up_code_servers_get_a_grpc_workspace(monkeypatch, tmp_path):
    """`flowpilot up` (FLOWPILOT_CODE_SERVER=flowpilot) runs one code server per shard and gives
    Dagster `grpc_server` entries for them, which Dagster reloads by asking the server."""
    from dagster._core.remote_origin import GrpcServerCodeLocationOrigin
    from dagster._core.workspace.load import location_origins_from_yaml_paths

    monkeypatch.setenv("FLOWPILOT_HOME", str(tmp_path))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("FLOWPILOT_CODE_SHARDS", "2")
    cfg = config.load()
    assert cfg.code_server == "flowpilot"
    path = shards.grpc_workspace_file(cfg, [4101, 4102])
    origins = location_origins_from_yaml_paths([str(path)])
    assert all(isinstance(o, GrpcServerCodeLocationOrigin) for o in origins)
    assert {(o.location_name, o.port) for o in origins} == {
        ("flowpilot-0", 4101),
        ("flowpilot-1", 4102),
    }
    args = processes.code_server_args(cfg, 1, 4102)
    assert args[1:3] == ["-m", "orchestration.code_server"]
    assert args[args.index("--port") + 1] == "4102"
    assert args[args.index("--attribute") + 1] == "shard_1_of_2"
    assert args[args.index("--location-name") + 1] == "flowpilot-1"
    assert str(path) in processes.dagster_dev_args(cfg, path)


def test_flowpilot_up_code_servers_listen_on_unix_sockets(monkeypatch, tmp_path):
    """`flowpilot up` gives each code server a Unix socket (no free-port race); a home too deep
    for a socket name gets a short directory under /tmp, as the embedded Postgres does."""
    from dagster._core.remote_origin import GrpcServerCodeLocationOrigin
    from dagster._core.workspace.load import location_origins_from_yaml_paths

    monkeypatch.setenv("FLOWPILOT_HOME", str(tmp_path))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("FLOWPILOT_CODE_SHARDS", "2")
    cfg = config.load()
    sockets = [config.code_server_socket(cfg, f"flowpilot-{i}") for i in range(2)]
    path = shards.grpc_workspace_file(cfg, sockets)
    origins = location_origins_from_yaml_paths([str(path)])
    assert all(isinstance(o, GrpcServerCodeLocationOrigin) for o in origins)
    assert {(o.location_name, o.socket, o.port) for o in origins} == {
        ("flowpilot-0", str(sockets[0]), None),
        ("flowpilot-1", str(sockets[1]), None),
    }
    args = processes.code_server_args(cfg, 1, sockets[1])
    assert args[args.index("--socket") + 1] == str(sockets[1]) and "--port" not in args
    assert all(len(str(s)) <= 100 for s in sockets)

    deep = tmp_path / ("d" * 90)
    monkeypatch.setenv("FLOWPILOT_HOME", str(deep))
    long_home = config.code_server_socket(config.load(), "flowpilot-15")
    assert len(str(long_home)) <= 100 and not str(long_home).startswith(str(deep))


def test_shards_get_a_generated_workspace_with_one_location_each(monkeypatch, tmp_path):
    monkeypatch.setenv("FLOWPILOT_HOME", str(tmp_path))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("FLOWPILOT_CODE_SHARDS", "4")
    cfg = config.load()
    path = shards.workspace_file(cfg)
    assert path.parent == tmp_path / "dagster"
    assert _origins(path) == {
        f"flowpilot-{i}": ("orchestration.definitions", f"shard_{i}_of_4") for i in range(4)
    }
    assert yaml.safe_load(path.read_text()) == shards.workspace(4)
    assert str(path) in processes.dagster_dev_args(cfg)
    assert str(path) in processes.dagster_daemon_args(cfg)


# Each shard's repository -------------------------------------------------------------------------


@pytest.fixture
def two_orgs(org, other_org, user):
    """acme (shard 0 of 4) with a scheduled workflow, globex (shard 3 of 4) with two."""
    acme = make_published_workflow(org, user, THREE_STEPS, slug="triage")
    with tenant_context(org.pk):
        trigger_create(workflow=acme, created_by=None, kind="schedule", cron="0 9 * * *")
    make_published_workflow(other_org, None, THREE_STEPS, slug="one")
    make_published_workflow(other_org, None, THREE_STEPS, slug="two")


@pytest.mark.django_db
def test_the_index_of_a_shard_holds_only_its_organizations(two_orgs):
    everything = published_job_index()
    assert set(everything) == {"acme__triage", "globex__one", "globex__two"}
    by_shard = [published_job_index(shard=i, shards=4) for i in range(4)]
    assert [set(index) for index in by_shard] == [
        {"acme__triage"},
        set(),
        set(),
        {"globex__one", "globex__two"},
    ]
    assert {k: v for index in by_shard for k, v in index.items()} == everything


@pytest.mark.django_db
def test_a_shard_repository_has_its_jobs_schedules_and_sensor(two_orgs):
    control_plane = ControlPlaneResource()
    first = make_repository(control_plane, shard=0, shards=4)
    last = make_repository(control_plane, shard=3, shards=4)
    empty = make_repository(control_plane, shard=1, shards=4)

    assert set(first.job_names) == {"acme__triage", "identity_cleanup"}
    assert set(last.job_names) == {"globex__one", "globex__two"}
    assert set(empty.job_names) == set()
    assert {s.job_name for s in first.schedule_defs} == {"acme__triage", "identity_cleanup"}
    assert list(last.schedule_defs) == [] and list(empty.schedule_defs) == []
    triggers = [repo.get_sensor_def("trigger_event_sensor") for repo in (first, last)]
    assert [{t.job_name for t in sensor.targets} for sensor in triggers] == [
        {"acme__triage"},
        {"globex__one", "globex__two"},
    ]
    # Every shard watches its own runs' status.
    assert "execution_success_sensor" in {s.name for s in empty.sensor_defs}
    assert {job.name for job in last.get_all_jobs()} == {"globex__one", "globex__two"}
    assert sorted(workflow_data(last).built_workflow_jobs()) == ["globex__one", "globex__two"]


@pytest.mark.django_db
def test_each_shards_trigger_sensor_reads_only_its_organizations_events(two_orgs):
    from dagster import DagsterInstance, build_sensor_context

    from control_plane.workflows.models import Workflow
    from tests.factories import run_workflow

    workflows = {w.slug: w for w in Workflow.objects.unscoped().all()}
    acme_run = run_workflow(workflows["triage"])  # the oldest event: globex's come after it
    globex_runs = [run_workflow(workflows["one"]), run_workflow(workflows["two"])]
    control_plane = ControlPlaneResource()

    results = {}
    with DagsterInstance.ephemeral() as instance:
        for shard in (0, 3, 1):
            sensor = make_repository(control_plane, shard=shard, shards=4).get_sensor_def(
                "trigger_event_sensor"
            )
            results[shard] = sensor.evaluate_tick(build_sensor_context(instance=instance))

    def executions(shard):
        return {int(r.tags["flowpilot/execution"]) for r in results[shard].run_requests}

    assert executions(0) == {acme_run.pk}
    assert executions(3) == {e.pk for e in globex_runs}
    assert executions(1) == set()
    # What each sensor read (its cursor is the last event it saw): shard 0 never reached
    # globex's newer events, and shard 1 saw none at all.
    assert results[0].cursor == str(acme_run.trigger_event.pk)
    assert results[3].cursor == str(globex_runs[-1].trigger_event.pk)
    assert results[1].cursor == "0"


@pytest.mark.django_db
def test_a_rebuild_reuses_the_jobs_of_versions_already_built(org, user, published):
    from control_plane.workflows.models import Workflow
    from control_plane.workflows.services import workflow_update

    built: dict = {}
    control_plane = ControlPlaneResource()
    first = make_repository(control_plane, built_jobs=built)
    triage = first.get_job("acme__triage")
    make_published_workflow(org, user, THREE_STEPS, slug="later")

    second = make_repository(control_plane, built_jobs=built)

    assert second.get_job("acme__triage") is triage  # the same object, snapshot cached
    assert second.get_job("acme__later").name == "acme__later"  # a new version: rendered
    assert set(built) == {job.stamp for job in published_jobs().values()}
    with tenant_context(org.pk):
        workflow_update(workflow=Workflow.objects.get(pk=published.pk), status="paused")
    make_repository(control_plane, built_jobs=built)
    assert triage not in built.values()  # no longer published: dropped


@pytest.mark.django_db
def test_loading_a_whole_location_reads_the_specs_in_two_queries(org, user):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for n in range(6):
        make_published_workflow(org, user, THREE_STEPS, slug=f"w{n}")
    repo = make_repository(ControlPlaneResource())
    with CaptureQueriesContext(connection) as queries:
        repo.get_job("acme__w3")  # a run worker: its own spec only
        one = len(queries)
        jobs = repo.get_all_jobs()  # a code server: all the others in one more query
    assert len(jobs) == 7
    assert (one, len(queries)) == (1, 2)


@pytest.mark.django_db
def test_the_module_exposes_one_attribute_per_shard(two_orgs):
    import orchestration.definitions as module

    module = importlib.reload(module)
    assert set(module.defs.job_names) >= {"acme__triage", "globex__one", "identity_cleanup"}
    assert set(module.shard_3_of_4.job_names) == {"globex__one", "globex__two"}
    assert module.shard_3_of_4 is module.shard_3_of_4  # built once per process
    with pytest.raises(AttributeError):
        module.shard_4_of_4  # noqa: B018
    with pytest.raises(AttributeError):
        module.nothing  # noqa: B018


# Reloads reach the organization's shard only ----------------------------------------------------


class FakeDagster(LocalHTTPServer):
    """Dagster's GraphQL endpoint as far as reloads go: records each location reloaded; a
    reload takes `seconds`, as a real one takes a while."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.reloaded: list[str] = []
        self.seconds = seconds
        self.busy = threading.Event()  # a reload request arrived
        super().__init__()

    class handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            location = body["variables"]["location"]
            self.server.owner.busy.set()
            time.sleep(self.server.owner.seconds)
            self.server.owner.reloaded.append(location)
            entry = {"__typename": "WorkspaceLocationEntry", "name": location}
            answer = json.dumps({"data": {"reloadRepositoryLocation": entry}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            return


@pytest.fixture
def fake_dagster():
    with FakeDagster() as server, override_settings(DAGSTER_URL=server.url):
        yield server
        assert dagster.wait_for_reloads(timeout=10)


def _reloads(server: FakeDagster) -> list[str]:
    """The reloads Dagster received once the background reloader is idle."""
    assert dagster.wait_for_reloads(timeout=10)
    return server.reloaded


@pytest.mark.django_db
def test_code_location_for_an_organization(org, other_org):
    with override_settings(FLOWPILOT_CODE_SHARDS=1):
        assert dagster.code_location_for(org.pk) == "flowpilot"
        assert dagster.code_location_for(GLOBEX) == "flowpilot"
    with override_settings(FLOWPILOT_CODE_SHARDS=4):
        assert dagster.code_location_for(org.pk) == dagster.code_location_for(ACME) == "flowpilot-0"
        assert dagster.code_location_for(other_org.pk) == "flowpilot-3"
        with pytest.raises(ValueError, match="no organization"):
            dagster.code_location_for(999_999)


@pytest.mark.django_db
@override_settings(FLOWPILOT_CODE_SHARDS=4)
def test_publish_pause_and_schedule_changes_reload_only_the_organizations_shard(
    other_org, fake_dagster, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        workflow = make_published_workflow(other_org, None, THREE_STEPS, slug="one")
    assert _reloads(fake_dagster) == ["flowpilot-3"]
    with tenant_context(other_org.pk), django_capture_on_commit_callbacks(execute=True):
        services.workflow_update(workflow=workflow, status="paused")
    assert _reloads(fake_dagster) == ["flowpilot-3"] * 2
    with tenant_context(other_org.pk), django_capture_on_commit_callbacks(execute=True):
        services.workflow_update(workflow=workflow, status="active")
        trigger_create(workflow=workflow, created_by=None, kind="schedule", cron="0 9 * * *")
    # Two more requests (a second one may be merged with the first while it waits).
    reloaded = _reloads(fake_dagster)
    assert set(reloaded) == {"flowpilot-3"} and len(reloaded) in (3, 4)


@pytest.mark.django_db
def test_one_shard_reloads_the_single_location(
    org, fake_dagster, django_capture_on_commit_callbacks
):
    with (
        override_settings(FLOWPILOT_CODE_SHARDS=1),
        django_capture_on_commit_callbacks(execute=True),
    ):
        make_published_workflow(org, None, THREE_STEPS, slug="solo")
    assert _reloads(fake_dagster) == ["flowpilot"]


@pytest.mark.django_db
@override_settings(FLOWPILOT_CODE_SHARDS=4)
def test_a_burst_of_reloads_is_merged_per_location_and_nobody_waits_for_them():
    with FakeDagster(seconds=0.5) as slow, override_settings(DAGSTER_URL=slow.url):
        started = time.monotonic()
        dagster.reload_code_location(GLOBEX)
        assert slow.busy.wait(timeout=5)
        for slug in (ACME, GLOBEX, GLOBEX, ACME):
            dagster.reload_code_location(slug)
        assert time.monotonic() - started < 0.4  # queued, not waited for
        # While globex's reload runs, the four requests behind it make one reload each location.
        assert _reloads(slow) == ["flowpilot-3", "flowpilot-0", "flowpilot-3"]
