from __future__ import annotations

from django.conf import settings
from django.db import models

from control_plane.core.tenancy import TenantManager
from control_plane.organizations.models import Organization
from control_plane.workflows.models import Workflow, WorkflowVersion


class WorkflowExecution(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCESS = "success"
        FAILURE = "failure"
        CANCELED = "canceled"

    FINISHED = (Status.SUCCESS, Status.FAILURE, Status.CANCELED)

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="executions")
    version = models.ForeignKey(WorkflowVersion, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    inputs = models.JSONField(default=dict)
    dagster_run_id = models.CharField(max_length=64, null=True, blank=True, unique=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = TenantManager()

    class Meta:
        indexes = [models.Index(fields=["organization", "-created_at"])]

    def __str__(self) -> str:
        return f"execution {self.pk} ({self.status})"


class TriggerEvent(models.Model):
    """Every start of a workflow is one of these rows, committed before anything runs. The
    trigger sensor turns pending rows into Dagster runs with run_key = the event id."""

    class Kind(models.TextChoices):
        MANUAL = "manual"
        API = "api"
        WEBHOOK = "webhook"
        EVENT = "event"
        SCHEDULE = "schedule"

    class Status(models.TextChoices):
        PENDING = "pending"
        LAUNCHED = "launched"
        FAILED = "failed"
        CANCELED = "canceled"  # canceled before its run started: the sensor leaves it

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="+")
    version = models.ForeignKey(WorkflowVersion, on_delete=models.CASCADE, related_name="+")
    execution = models.OneToOneField(
        WorkflowExecution, on_delete=models.CASCADE, related_name="trigger_event"
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    dagster_run_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    launched_at = models.DateTimeField(null=True, blank=True)

    objects = TenantManager()

    class Meta:
        indexes = [
            models.Index(
                fields=["id"],
                name="trigger_event_pending",
                condition=models.Q(status="pending"),
            )
        ]

    def __str__(self) -> str:
        return f"event {self.pk} ({self.kind}, {self.status})"


class ExecutionStep(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        SUCCESS = "success"
        FAILURE = "failure"
        SKIPPED = "skipped"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    execution = models.ForeignKey(WorkflowExecution, on_delete=models.CASCADE, related_name="steps")
    step_id = models.CharField(max_length=63)
    step_type = models.CharField(max_length=100)
    position = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = TenantManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["execution", "step_id"], name="uniq_execution_step")
        ]
        ordering = ["execution_id", "position"]

    def __str__(self) -> str:
        return f"{self.execution_id}/{self.step_id} ({self.status})"
