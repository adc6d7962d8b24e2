from __future__ import annotations

from rest_framework import serializers

from control_plane.executions.models import ExecutionStep, WorkflowExecution


class StepOutput(serializers.ModelSerializer):
    class Meta:
        model = ExecutionStep
        fields = [
            "step_id",
            "step_type",
            "status",
            "attempts",
            "output",
            "error",
            "started_at",
            "finished_at",
        ]


class ExecutionOutput(serializers.ModelSerializer):
    workflow = serializers.IntegerField(source="workflow_id")
    version = serializers.IntegerField(source="version.number")
    trigger_event = serializers.SerializerMethodField()
    steps = serializers.SerializerMethodField()

    class Meta:
        model = WorkflowExecution
        fields = [
            "id",
            "workflow",
            "version",
            "status",
            "inputs",
            "dagster_run_id",
            "trigger_event",
            "error",
            "created_at",
            "started_at",
            "finished_at",
            "steps",
        ]

    def get_trigger_event(self, execution: WorkflowExecution) -> int | None:
        event = getattr(execution, "trigger_event", None)
        return event.pk if event else None

    def get_steps(self, execution: WorkflowExecution) -> list[dict]:
        if not self.context.get("with_steps", True):
            return []
        return StepOutput(execution.steps.all(), many=True).data
