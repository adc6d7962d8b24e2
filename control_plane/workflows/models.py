from __future__ import annotations

from django.conf import settings
from django.db import models

from control_plane.core.crypto import EncryptedTextField
from control_plane.core.tenancy import TenantManager
from control_plane.organizations.models import Department, Organization


class Workflow(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        ACTIVE = "active"
        PAUSED = "paused"
        ARCHIVED = "archived"

    class Priority(models.TextChoices):
        LOW = "low"
        NORMAL = "normal"
        HIGH = "high"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=60)
    description = models.TextField(blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    draft_definition = models.JSONField(default=dict, blank=True)  # a draft may be empty
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.NORMAL)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who answers for this workflow (defaults to its creator).",
    )
    department = models.ForeignKey(
        Department, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "slug"], name="uniq_workflow_slug")
        ]
        indexes = [models.Index(fields=["organization", "status"])]

    def __str__(self) -> str:
        return self.slug


# A workflow's priority as its runs' `dagster/priority` tag: the run queue dequeues higher first.
RUN_PRIORITY: dict[str, int] = {
    Workflow.Priority.LOW: -1,
    Workflow.Priority.NORMAL: 0,
    Workflow.Priority.HIGH: 1,
}


class WorkflowVersion(models.Model):
    """A published definition. Immutable: the database refuses UPDATE on this table."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    definition = models.JSONField()
    content_hash = models.CharField(max_length=64)
    changelog = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    published_at = models.DateTimeField(auto_now_add=True)

    objects = TenantManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workflow", "number"], name="uniq_version_number")
        ]
        ordering = ["workflow_id", "-number"]

    def __str__(self) -> str:
        return f"{self.workflow_id}@v{self.number}"


class WorkflowVariable(models.Model):
    """A named, typed value that steps read as `{{ vars.name }}`: for one workflow, or for every
    workflow of the organization (`workflow` empty; a workflow's own variable wins). Secret
    values are encrypted at rest, never returned by the API and never put in run config: ops
    resolve them by name when they run."""

    class Type(models.TextChoices):
        STRING = "string"
        INTEGER = "integer"
        NUMBER = "number"
        BOOLEAN = "boolean"
        JSON = "json"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    workflow = models.ForeignKey(
        Workflow, null=True, blank=True, on_delete=models.CASCADE, related_name="variables"
    )
    name = models.CharField(max_length=63)
    type = models.CharField(max_length=10, choices=Type.choices, default=Type.STRING)
    description = models.CharField(max_length=500, blank=True)
    is_secret = models.BooleanField(default=False)
    value = models.JSONField(null=True, blank=True)  # when not secret
    secret_value = EncryptedTextField(blank=True)  # JSON text, when secret
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name"],
                condition=models.Q(workflow__isnull=True),
                name="uniq_org_variable_name",
            ),
            models.UniqueConstraint(
                fields=["workflow", "name"],
                condition=models.Q(workflow__isnull=False),
                name="uniq_workflow_variable_name",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class WorkflowTrigger(models.Model):
    """What starts a workflow besides a person: a schedule (cron + time zone), a webhook (a
    secret URL, optionally HMAC-signed), or a named control-plane event."""

    class Kind(models.TextChoices):
        MANUAL = "manual"
        SCHEDULE = "schedule"
        WEBHOOK = "webhook"
        EVENT = "event"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="triggers")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    name = models.CharField(max_length=100, blank=True)
    enabled = models.BooleanField(default=True)
    inputs = models.JSONField(default=dict, blank=True)  # inputs every run of it gets
    # schedule
    cron = models.CharField(max_length=100, blank=True)
    timezone = models.CharField(max_length=64, blank=True)
    # webhook: the URL's secret (shown to editors) and its hash (how a request finds it)
    webhook_token = EncryptedTextField(blank=True)
    webhook_token_hash = models.CharField(max_length=64, blank=True, db_index=True)
    signing_secret = EncryptedTextField(blank=True)  # HMAC-SHA256 of the body, when set
    # event
    event_type = models.CharField(max_length=100, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_triggered_at = models.DateTimeField(null=True, blank=True)

    objects = TenantManager()

    class Meta:
        indexes = [models.Index(fields=["organization", "kind", "event_type"])]

    def __str__(self) -> str:
        return f"{self.kind} trigger of {self.workflow_id}"


class WorkflowTemplate(models.Model):
    """An organization's own template. The built-in gallery ships as files with the code
    (control_plane/workflows/gallery/); both kinds share one API."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    slug = models.SlugField(max_length=60)
    name = models.CharField(max_length=200)
    category = models.CharField(max_length=60)
    description = models.TextField(blank=True)
    definition = models.JSONField()  # may hold placeholders: "[[ name ]]"
    placeholders = models.JSONField(default=list, blank=True)  # [{name, description, default}]
    required_connectors = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "slug"], name="uniq_template_slug")
        ]

    def __str__(self) -> str:
        return self.slug
