from django.contrib import admin

from control_plane.executions.models import ExecutionStep, TriggerEvent, WorkflowExecution


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


@admin.register(WorkflowExecution)
class ExecutionAdmin(admin.ModelAdmin):
    list_display = ("id", "workflow", "status", "dagster_run_id", "created_at", "finished_at")
    list_filter = ("status",)
    inlines = [StepInline]


@admin.register(TriggerEvent)
class TriggerEventAdmin(admin.ModelAdmin):
    list_display = ("id", "workflow", "kind", "status", "dagster_run_id", "created_at")
    list_filter = ("kind", "status")
