"""Job snapshots kept across code-server processes, so a code location of thousands of
workflows loads without rendering them all again.

Dagster's webserver and daemon load a code location by asking its code server for the
repository snapshot (every job's name and snapshot id) and then for each job's snapshot. Dagster's
own server builds every job and snapshots it to answer (bench/code_location.py: most of the load
of 1,000 workflows). A job is a pure function of its render stamp (`WorkflowSpec.stamp`: the
published version and what it is rendered with), so FlowPilot's code server
(orchestration/code_server.py) keeps each job's two answers in a file named for the stamp:

    <FLOWPILOT_SNAPSHOT_CACHE>/<location>/<code fingerprint>/<stamp>.snap
        line 1: the serialized JobRefSnap (name, snapshot id, ...)
        line 2: the serialized JobDataSnap (the ExternalJob answer)

and answers from them; a job is rendered only when it is new, when a run or an execution plan
needs it, or when the files are missing. The code fingerprint covers the Dagster and Python
versions, FlowPilot's rendering code and the resources' config schema: any change to them starts
a new directory (the previous one is removed when the location loads). Without a directory the
store lives in memory (it still spares the refetch after every reload).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from dagster import GraphDefinition, JobDefinition, OpDefinition, RepositoryDefinition

from flowpilot.config import PROJECT_ROOT
from orchestration.rendering import STAMP_METADATA
from orchestration.repository_data import workflow_data

log = logging.getLogger("flowpilot.job_snapshots")

# The packages whose code decides what a job (and so its snapshot) looks like.
RENDERING_PACKAGES = ("orchestration", "resources")


class KeptJob(NamedTuple):
    ref: Any  # JobRefSnap
    serialized_data: str  # serialized JobDataSnap


def code_fingerprint(resource_defs: Mapping[str, Any]) -> str:
    """A digest of everything besides the workflow that shapes a rendered job's snapshot."""
    import dagster

    digest = hashlib.sha256()
    digest.update(f"dagster {dagster.__version__} python {sys.version_info[:3]}".encode())
    for package in RENDERING_PACKAGES:
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            digest.update(str(path.relative_to(PROJECT_ROOT)).encode())
            digest.update(path.read_bytes())
    # The resources' config schema (their defaults can come from the environment).
    probe = OpDefinition(
        compute_fn=lambda _context, _inputs: None,
        name="fingerprint_probe",
        required_resource_keys=set(resource_defs),
    )
    job = GraphDefinition(name="fingerprint_probe", node_defs=[probe]).to_job(
        resource_defs=dict(resource_defs)
    )
    digest.update(job.get_job_snapshot_id().encode())
    return digest.hexdigest()[:20]


class JobSnapshotStore:
    """Each workflow job's snapshot answers, by render stamp, for one code location."""

    def __init__(self, directory: Path | None, location: str, fingerprint: str) -> None:
        self._root = directory / location if directory else None
        self._dir = self._root / fingerprint if self._root else None
        self._refs: dict[str, Any] = {}
        self._data: dict[str, str] = {}  # only without a directory
        self._lock = threading.Lock()
        self._on_disk: set[str] = set()
        if self._dir and self._dir.is_dir():
            self._on_disk = {path.stem for path in self._dir.glob("*.snap")}

    @property
    def directory(self) -> Path | None:
        return self._dir

    def has(self, stamp: str) -> bool:
        return stamp in self._refs or stamp in self._on_disk or stamp in self._data

    def get(self, stamp: str) -> KeptJob | None:
        from dagster._core.remote_representation.external_data import JobRefSnap
        from dagster._serdes import deserialize_value

        if self._dir is None:
            if stamp not in self._data:
                return None
            return KeptJob(self._refs[stamp], self._data[stamp])
        if stamp not in self._on_disk:
            return None
        try:
            ref_line, data = (self._dir / f"{stamp}.snap").read_text().split("\n", 1)
            ref = self._refs.get(stamp) or deserialize_value(ref_line, JobRefSnap)
        except Exception:  # missing, truncated or from another version: render again
            log.warning("job snapshot %s unreadable; rendering the job again", stamp)
            self._on_disk.discard(stamp)
            return None
        self._refs[stamp] = ref
        return KeptJob(ref, data)

    def ref(self, stamp: str) -> Any | None:
        """The kept JobRefSnap (read from the file once, then held in memory)."""
        if stamp in self._refs:
            return self._refs[stamp]
        kept = self.get(stamp)
        return kept.ref if kept else None

    def put(self, job: JobDefinition) -> KeptJob:
        """Snapshot a built workflow job and keep it under its own render stamp."""
        from dagster._core.remote_representation.external_data import JobDataSnap, JobRefSnap
        from dagster._serdes import serialize_value

        stamp = job.metadata[STAMP_METADATA].value
        kept = KeptJob(
            JobRefSnap.from_job_def(job),
            serialize_value(JobDataSnap.from_job_def(job, include_parent_snapshot=True)),
        )
        self._refs[stamp] = kept.ref
        if self._dir is None:
            self._data[stamp] = kept.serialized_data
            return kept
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            temporary = self._dir / f".{stamp}.{os.getpid()}.{threading.get_ident()}"
            temporary.write_text(f"{serialize_value(kept.ref)}\n{kept.serialized_data}")
            temporary.replace(self._dir / f"{stamp}.snap")
            with self._lock:
                self._on_disk.add(stamp)
        except OSError as error:  # a read-only or full disk costs speed, never a load
            log.warning("could not keep the snapshot of %s: %s", job.name, error)
        return kept

    def prune(self, keep: set[str]) -> int:
        """Remove the snapshots of stamps not in `keep` and other fingerprints' directories."""
        removed = 0
        for stamp in set(self._refs) - keep:
            self._refs.pop(stamp, None)
            self._data.pop(stamp, None)
        if self._dir is None or self._root is None or not self._root.is_dir():
            return 0
        for other in self._root.iterdir():
            if other != self._dir and other.is_dir():
                shutil.rmtree(other, ignore_errors=True)
        with self._lock:
            stale = self._on_disk - keep
            self._on_disk -= stale
        for stamp in stale:
            (self._dir / f"{stamp}.snap").unlink(missing_ok=True)
            removed += 1
        return removed


def _workflow_refs(repository: RepositoryDefinition, store: JobSnapshotStore) -> tuple[list, int]:
    """Every workflow job's JobRefSnap, from the store or rendered and kept; and how many were
    rendered. Snapshots of jobs no longer published are removed."""
    data = workflow_data(repository)
    if data is None:
        raise TypeError(f"{repository.name} is not a FlowPilot workflow repository")
    refs, rendered = [], 0
    for name, job in data.published.items():
        ref = store.ref(job.stamp)
        if ref is None:
            ref, rendered = store.put(data.get_job(name)).ref, rendered + 1
        refs.append(ref)
    store.prune({job.stamp for job in data.published.values()})
    log.info(
        "repository snapshot of %s: %d job snapshots kept, %d rendered",
        repository.name,
        len(refs) - rendered,
        rendered,
    )
    return refs, rendered


def keep_all(repository: RepositoryDefinition, store: JobSnapshotStore) -> tuple[int, int]:
    """Keep the snapshot of every workflow job of `repository` (rendering those missing):
    (workflow jobs, rendered now)."""
    refs, rendered = _workflow_refs(repository, store)
    return len(refs), rendered


def repository_snapshot(repository: RepositoryDefinition, store: JobSnapshotStore) -> Any:
    """The repository's RepositorySnap with deferred job snapshots, as Dagster computes it
    (`RepositorySnap.from_def(repository, defer_snapshots=True)`), the workflow jobs' refs read
    from the store; jobs missing from it are rendered and kept."""
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster._record import copy

    data = workflow_data(repository)
    if data is None:
        return RepositorySnap.from_def(repository, defer_snapshots=True)
    refs, _rendered = _workflow_refs(repository, store)
    rest = RepositoryDefinition(
        repository.name,
        repository_data=data.without_workflow_jobs(),
        description=repository.description,
        metadata=repository.metadata,
        repository_load_data=repository.repository_load_data,
    )
    snap = RepositorySnap.from_def(rest, defer_snapshots=True)
    return copy(snap, job_refs=sorted([*snap.get_job_refs(), *refs], key=lambda ref: ref.name))


def serialized_job_data(
    repository: RepositoryDefinition, job_name: str, store: JobSnapshotStore
) -> str | None:
    """The ExternalJob answer (a serialized JobDataSnap) for a workflow job, from the store
    (rendered and kept if missing); None for any other job."""
    data = workflow_data(repository)
    if data is None or job_name not in data.published:
        return None
    kept = store.get(data.published[job_name].stamp)
    if kept is None:
        kept = store.put(data.get_job(job_name))
    return kept.serialized_data
