from __future__ import annotations

from rest_framework import serializers

from control_plane.workflows.models import Workflow, WorkflowVersion


class WorkflowInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=60, required=False, allow_blank=True)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    definition = serializers.JSONField(required=False, default=dict)


class WorkflowUpdateInput(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    definition = serializers.JSONField(required=False)


class WorkflowOutput(serializers.ModelSerializer):
    definition = serializers.JSONField(source="draft_definition")
    latest_version = serializers.SerializerMethodField()

    class Meta:
        model = Workflow
        fields = [
            "id",
            "name",
            "slug",
            "description",
            "status",
            "definition",
            "latest_version",
            "created_at",
            "updated_at",
        ]

    def get_latest_version(self, workflow: Workflow) -> int | None:
        numbers = [v.number for v in workflow.versions.all()]  # prefetched
        return max(numbers) if numbers else None


class VersionOutput(serializers.ModelSerializer):
    class Meta:
        model = WorkflowVersion
        fields = ["id", "number", "content_hash", "changelog", "definition", "published_at"]


class PublishInput(serializers.Serializer):
    changelog = serializers.CharField(required=False, allow_blank=True, default="")


class RunInput(serializers.Serializer):
    inputs = serializers.DictField(required=False, default=dict)


class ValidateInput(serializers.Serializer):
    definition = serializers.JSONField()


class ValidationProblem(serializers.Serializer):
    path = serializers.CharField()
    message = serializers.CharField()
    step = serializers.CharField(allow_null=True, required=False)


class ValidateOutput(serializers.Serializer):
    valid = serializers.BooleanField()
    errors = ValidationProblem(many=True)
