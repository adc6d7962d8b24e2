from django.contrib import admin

from control_plane.executions.models import (
    ExecutionLog,
    ExecutionStep,
    TriggerEvent,
    WorkflowExecution,
)


class StepInline(admin.TabularInline):
    model = ExecutionStep
    extra = 0
    can_delete = False
    readonly_fields = (
        "step_id",
        "step_type",
        "status",
        "attempts",
        "error",
        "started_at",
        "finished_at",
    )
    exclude = ("organization", "output", "position")


class LogInline(admin.TabularInline):
    """The execution's log, read-only (lines are written by its run)."""

    model = ExecutionLog
    extra = 0
    can_delete = False
    max_num = 0  # no "add another"
    readonly_fields = ("created_at", "step_id", "level", "message")
    fields = readonly_fields
    ordering = ("id",)


@admin.register(WorkflowExecution)
class ExecutionAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "workflow",
        "status",
        "rerun_of",
        "dagster_run_id",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "rerun_strategy")
    raw_id_fields = ("rerun_of",)
    inlines = [StepInline, LogInline]


@admin.register(TriggerEvent)
class TriggerEventAdmin(admin.ModelAdmin):
    list_display = ("id", "workflow", "kind", "status", "dagster_run_id", "created_at")
    list_filter = ("kind", "status")
