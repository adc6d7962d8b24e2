from __future__ import annotations

from rest_framework import serializers

from control_plane.executions.logs import LEVELS
from control_plane.executions.models import ExecutionLog, ExecutionStep, WorkflowExecution


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
    rerun_of = serializers.IntegerField(source="rerun_of_id", allow_null=True)
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
            "rerun_of",
            "rerun_strategy",
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


class LogOutput(serializers.ModelSerializer):
    class Meta:
        model = ExecutionLog
        fields = ["id", "step_id", "level", "message", "created_at"]


class LogFilterInput(serializers.Serializer):
    """Query parameters of an execution's log: one step, some levels (comma-separated), only
    lines after an id (for reading a running execution's log as it grows)."""

    step = serializers.CharField(required=False, max_length=63, allow_blank=True)
    level = serializers.CharField(required=False, max_length=100)
    after = serializers.IntegerField(required=False, min_value=0)

    def validate_level(self, value: str) -> list[str]:
        levels = [level.strip().lower() for level in value.split(",") if level.strip()]
        unknown = sorted(set(levels) - set(LEVELS))
        if unknown or not levels:
            raise serializers.ValidationError(
                f"expected one or more of {', '.join(LEVELS)} (comma-separated)"
            )
        return levels


class RerunInput(serializers.Serializer):
    strategy = serializers.ChoiceField(choices=WorkflowExecution.RerunStrategy.choices)
