from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

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

    class RerunStrategy(models.TextChoices):
        ALL = "all"  # every step again
        FROM_FAILURE = "from_failure"  # Dagster's re-execution: failed and not-run steps only

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="executions")
    version = models.ForeignKey(WorkflowVersion, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    inputs = models.JSONField(default=dict)
    dagster_run_id = models.CharField(max_length=64, null=True, blank=True, unique=True)
    error = models.TextField(blank=True)
    rerun_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reruns"
    )
    rerun_strategy = models.CharField(max_length=20, choices=RerunStrategy.choices, blank=True)
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
        RERUN = "rerun"

    class Status(models.TextChoices):
        PENDING = "pending"
        LAUNCHING = "launching"  # claimed by the fast path; swept by the sensor once stale
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
    claimed_at = models.DateTimeField(null=True, blank=True)
    launched_at = models.DateTimeField(null=True, blank=True)

    objects = TenantManager()

    class Meta:
        indexes = [
            models.Index(
                fields=["id"],
                name="trigger_event_pending",
                condition=models.Q(status="pending"),
            ),
            models.Index(
                fields=["claimed_at"],
                name="trigger_event_launching",
                condition=models.Q(status="launching"),
            ),
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


class ExecutionLog(models.Model):
    """A line of an execution's log: run and step events and what the steps logged."""

    class Level(models.TextChoices):
        DEBUG = "debug"
        INFO = "info"
        WARNING = "warning"
        ERROR = "error"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    execution = models.ForeignKey(WorkflowExecution, on_delete=models.CASCADE, related_name="logs")
    step_id = models.CharField(max_length=63, blank=True)
    level = models.CharField(max_length=10, choices=Level.choices, default=Level.INFO)
    message = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantManager()

    class Meta:
        indexes = [models.Index(fields=["execution", "id"])]
        ordering = ["execution_id", "id"]

    def __str__(self) -> str:
        return f"{self.execution_id} {self.level}: {self.message[:60]}"
