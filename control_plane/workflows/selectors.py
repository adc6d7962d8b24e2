from __future__ import annotations

from django.db.models import OuterRef, Q, QuerySet, Subquery

from control_plane.core.tenancy import system_database
from control_plane.organizations.models import Organization
from control_plane.workflows.models import RUN_PRIORITY, Workflow, WorkflowTrigger, WorkflowVersion
from flowpilot.shards import shard_of
from orchestration.steps.definition import PublishedJob, WorkflowSpec, job_name_for, render_stamp


def workflow_list(
    *,
    organization: Organization,
    status: str | None = None,
    search: str | None = None,
    owner_id: str | None = None,
    department_id: str | None = None,
) -> QuerySet[Workflow]:
    """The organization's workflows, newest change first, filtered. Filter values that cannot
    match (a non-numeric id) match nothing rather than erroring."""
    qs = (
        Workflow.objects.filter(organization=organization)
        .select_related("owner", "department")
        .order_by("-updated_at", "-id")
    )
    if status:
        qs = qs.filter(status=status)
    if search:
        qs = qs.filter(
            Q(name__icontains=search) | Q(slug__icontains=search) | Q(description__icontains=search)
        )
    for field, value in (("owner_id", owner_id), ("department_id", department_id)):
        if value:
            qs = qs.filter(**{field: int(value)}) if value.isdecimal() else qs.none()
    return qs


def workflow_get(*, organization: Organization, workflow_id: int) -> Workflow:
    return Workflow.objects.get(organization=organization, pk=workflow_id)


def workflow_latest_version(*, workflow: Workflow) -> WorkflowVersion | None:
    return workflow.versions.order_by("-number").first()


def version_list(*, workflow: Workflow) -> QuerySet[WorkflowVersion]:
    return workflow.versions.order_by("-number")


def _system_versions() -> QuerySet[WorkflowVersion]:
    """Versions of every organization: system reads for Dagster's code location."""
    return WorkflowVersion.objects.unscoped().using(system_database())


def _latest_versions() -> QuerySet[WorkflowVersion]:
    latest = (
        _system_versions()
        .filter(workflow=OuterRef("workflow"))
        .order_by("-number")
        .values("pk")[:1]
    )
    return _system_versions().filter(pk=Subquery(latest), workflow__status=Workflow.Status.ACTIVE)


def shard_organization_ids(*, shard: int, shards: int) -> list[int]:
    """The organizations whose workflows code-location shard `shard` of `shards` loads
    (flowpilot/shards.py: a stable hash of the slug)."""
    rows = Organization.objects.using(system_database()).values_list("id", "slug")
    return [pk for pk, slug in rows if shard_of(slug, shards) == shard]


def published_jobs(*, shard: int = 0, shards: int = 1) -> dict[str, PublishedJob]:
    """{Dagster job name: (version id, render stamp)} of the latest version of every active
    workflow, across organizations (a system read for the code location), or of the
    organizations in one shard. One cheap query, no definitions."""
    versions = _latest_versions()
    if shards > 1:
        versions = versions.filter(
            organization_id__in=shard_organization_ids(shard=shard, shards=shards)
        )
    rows = versions.values(
        "id",
        "number",
        "content_hash",
        "organization_id",
        "organization__slug",
        "workflow_id",
        "workflow__slug",
        "workflow__name",
        "workflow__priority",
    )
    jobs = {}
    for row in rows:
        fields = {
            "organization_id": row["organization_id"],
            "org_slug": row["organization__slug"],
            "workflow_id": row["workflow_id"],
            "workflow_slug": row["workflow__slug"],
            "workflow_name": row["workflow__name"],
            "version_id": row["id"],
            "version": row["number"],
            "content_hash": row["content_hash"],
            "priority": RUN_PRIORITY[row["workflow__priority"]],
        }
        name = job_name_for(fields["org_slug"], fields["workflow_slug"])
        jobs[name] = PublishedJob(row["id"], render_stamp(fields))
    return jobs


def published_job_index(*, shard: int = 0, shards: int = 1) -> dict[str, int]:
    """{Dagster job name: version id}: `published_jobs` without the stamps."""
    return {
        name: job.version_id for name, job in published_jobs(shard=shard, shards=shards).items()
    }


def workflow_spec(*, version_id: int) -> WorkflowSpec:
    version = _system_versions().select_related("workflow", "organization").get(pk=version_id)
    return spec_from_version(version)


def workflow_specs(*, version_ids: list[int]) -> dict[int, WorkflowSpec]:
    """{version id: spec} for many versions in one query (a code server loading its location);
    ids that do not exist are left out."""
    versions = _system_versions().select_related("workflow", "organization")
    versions = versions.filter(pk__in=version_ids)
    return {version.pk: spec_from_version(version) for version in versions}


def spec_from_version(version: WorkflowVersion) -> WorkflowSpec:
    return WorkflowSpec(
        organization_id=version.organization_id,
        org_slug=version.organization.slug,
        workflow_id=version.workflow_id,
        workflow_slug=version.workflow.slug,
        workflow_name=version.workflow.name,
        version_id=version.pk,
        version=version.number,
        content_hash=version.content_hash,
        priority=RUN_PRIORITY[version.workflow.priority],
        definition=version.definition,
    )


def schedule_index() -> list[dict]:
    """Every enabled schedule trigger of an active workflow, across organizations (a system read
    for the code location, one query): what Dagster renders as ScheduleDefinitions. The
    `updated_at` stamp shows in the schedule, so a changed trigger is a changed definition."""
    rows = (
        WorkflowTrigger.objects.unscoped()
        .using(system_database())
        .filter(
            kind=WorkflowTrigger.Kind.SCHEDULE,
            enabled=True,
            workflow__status=Workflow.Status.ACTIVE,
        )
        .order_by("id")
        .values_list("id", "organization__slug", "workflow__slug", "cron", "timezone", "updated_at")
    )
    return [
        {
            "trigger_id": trigger_id,
            "job_name": job_name_for(org, slug),
            "cron": cron,
            "timezone": timezone or "UTC",
            "updated_at": updated_at.isoformat(),
        }
        for trigger_id, org, slug, cron, timezone, updated_at in rows
    ]
