"""Job snapshots kept across code-server processes (orchestration/job_snapshots.py), over real
published workflows and real Dagster snapshots: the answers from the store are byte for byte what
Dagster computes from the built jobs, a warm store answers without building any job, and
anything a job is rendered from (a new version, a rename, a priority, the code) changes them."""

from __future__ import annotations

import pytest
from dagster._core.remote_representation.external_data import JobDataSnap, RepositorySnap
from dagster._serdes import serialize_value

from control_plane.core.tenancy import tenant_context
from control_plane.workflows.models import Workflow
from control_plane.workflows.services import workflow_publish, workflow_update
from orchestration.job_snapshots import (
    JobSnapshotStore,
    code_fingerprint,
    repository_snapshot,
    serialized_job_data,
)
from orchestration.repository import default_resources, make_repository
from orchestration.repository_data import workflow_data
from resources.control_plane import ControlPlaneResource
from tests.factories import THREE_STEPS, make_published_workflow

pytestmark = pytest.mark.django_db

CONTROL_PLANE = ControlPlaneResource()
FINGERPRINT = code_fingerprint(default_resources(CONTROL_PLANE))


@pytest.fixture
def workflows(org, user, published):
    for slug in ("one", "two"):
        make_published_workflow(org, user, THREE_STEPS, slug=slug)
    return ["acme__triage", "acme__one", "acme__two"]


def dagster_answers(job_names: list[str]) -> tuple[str, dict[str, str]]:
    """What Dagster's own code server answers: the repository snapshot with deferred job
    snapshots and each job's ExternalJob answer, from a fully built repository."""
    repository = make_repository(CONTROL_PLANE)
    snap = serialize_value(RepositorySnap.from_def(repository, defer_snapshots=True))
    jobs = {
        name: serialize_value(
            JobDataSnap.from_job_def(repository.get_job(name), include_parent_snapshot=True)
        )
        for name in job_names
    }
    return snap, jobs


def store_answers(store: JobSnapshotStore, job_names: list[str]):
    repository = make_repository(CONTROL_PLANE, deferred=store.has)
    repository.load_all_definitions()  # what the code server does when it loads the location
    snap = serialize_value(repository_snapshot(repository, store))
    jobs = {name: serialized_job_data(repository, name, store) for name in job_names}
    return snap, jobs, workflow_data(repository).built_workflow_jobs()


def test_a_cold_store_answers_as_dagster_does_and_keeps_every_job(workflows, tmp_path):
    expected = dagster_answers(workflows)
    store = JobSnapshotStore(tmp_path, "flowpilot", FINGERPRINT)

    snap, jobs, built = store_answers(store, workflows)

    assert (snap, jobs) == expected
    assert sorted(built) == sorted(workflows)  # nothing kept yet: every job rendered
    kept = sorted(path.name for path in (tmp_path / "flowpilot" / FINGERPRINT).iterdir())
    assert len(kept) == 3 and all(name.endswith(".snap") for name in kept)


def test_a_warm_store_answers_without_building_any_job(workflows, tmp_path):
    store_answers(JobSnapshotStore(tmp_path, "flowpilot", FINGERPRINT), workflows)
    expected = dagster_answers(workflows)

    # A new process: a new store over the same directory.
    store = JobSnapshotStore(tmp_path, "flowpilot", FINGERPRINT)
    snap, jobs, built = store_answers(store, workflows)

    assert (snap, jobs) == expected
    assert built == []
    # A run or an execution plan still gets the real job, built on demand.
    repository = make_repository(CONTROL_PLANE, deferred=store.has)
    assert repository.get_job("acme__one").name == "acme__one"
    assert workflow_data(repository).built_workflow_jobs() == ["acme__one"]


def test_a_rename_a_priority_and_a_new_version_are_new_snapshots(
    org, user, workflows, published, tmp_path
):
    store = JobSnapshotStore(tmp_path, "flowpilot", FINGERPRINT)
    store_answers(store, workflows)
    with tenant_context(org.pk):
        workflow_update(workflow=Workflow.objects.get(pk=published.pk), name="Triage, renamed")
        workflow_update(workflow=Workflow.objects.get(slug="one"), priority="high")
        two = Workflow.objects.get(slug="two")
        draft = {**THREE_STEPS, "steps": [{**THREE_STEPS["steps"][0], "name": "Changed"}]}
        workflow_update(workflow=two, draft_definition=draft)
        workflow_publish(workflow=two, published_by=user)  # a new version of `two`

    store = JobSnapshotStore(tmp_path, "flowpilot", FINGERPRINT)
    snap, jobs, built = store_answers(store, workflows)

    assert (snap, jobs) == dagster_answers(workflows)
    assert sorted(built) == sorted(workflows)  # all three changed, all three rendered again
    assert "Triage, renamed" in jobs["acme__triage"]
    # The three superseded snapshots are gone; the three current ones are kept.
    assert len(list((tmp_path / "flowpilot" / FINGERPRINT).glob("*.snap"))) == 3


def test_changed_code_starts_a_new_directory_and_removes_the_old(workflows, tmp_path):
    store_answers(JobSnapshotStore(tmp_path, "flowpilot", "old-code"), workflows)
    assert (tmp_path / "flowpilot" / "old-code").is_dir()

    store = JobSnapshotStore(tmp_path, "flowpilot", FINGERPRINT)
    _snap, _jobs, built = store_answers(store, workflows)

    assert sorted(built) == sorted(workflows)
    assert [path.name for path in (tmp_path / "flowpilot").iterdir()] == [FINGERPRINT]


def test_the_fingerprint_covers_the_resources_config(monkeypatch):
    from resources.email import EmailResource

    resources = default_resources(CONTROL_PLANE)
    other = {**resources, "email": EmailResource(settings_module="somewhere.else")}
    assert code_fingerprint(resources) == FINGERPRINT
    assert code_fingerprint(other) != FINGERPRINT


def test_an_unreadable_snapshot_is_rendered_again(workflows, tmp_path):
    store_answers(JobSnapshotStore(tmp_path, "flowpilot", FINGERPRINT), workflows)
    for path in (tmp_path / "flowpilot" / FINGERPRINT).glob("*.snap"):
        path.write_text("not a snapshot")

    store = JobSnapshotStore(tmp_path, "flowpilot", FINGERPRINT)
    repository = make_repository(CONTROL_PLANE, deferred=store.has)
    snap = serialize_value(repository_snapshot(repository, store))

    assert snap == dagster_answers(workflows)[0]
    assert sorted(workflow_data(repository).built_workflow_jobs()) == sorted(workflows)


def test_without_a_directory_the_store_keeps_snapshots_in_memory(workflows):
    store = JobSnapshotStore(None, "flowpilot", FINGERPRINT)
    store_answers(store, workflows)

    snap, jobs, built = store_answers(store, workflows)

    assert (snap, jobs) == dagster_answers(workflows)
    assert built == []
