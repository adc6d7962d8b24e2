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
    owner = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, help_text="A member's user id"
    )
    department = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    status = serializers.ChoiceField(
        choices=Workflow.Status.choices,
        required=False,
        help_text="active ⇄ paused, → archived; needs workflow.publish",
    )
    priority = serializers.ChoiceField(choices=Workflow.Priority.choices, required=False)


class WorkflowOutput(serializers.ModelSerializer):
    definition = serializers.JSONField(source="draft_definition")
    latest_version = serializers.SerializerMethodField()
    owner = serializers.SerializerMethodField()
    department = serializers.SerializerMethodField()

    class Meta:
        model = Workflow
        fields = [
            "id",
            "name",
            "slug",
            "description",
            "status",
            "priority",
            "owner",
            "department",
            "definition",
            "latest_version",
            "created_at",
            "updated_at",
        ]

    def get_owner(self, workflow: Workflow) -> dict | None:
        owner = workflow.owner
        return {"id": owner.pk, "email": owner.email, "name": owner.name} if owner else None

    def get_department(self, workflow: Workflow) -> dict | None:
        department = workflow.department
        return {"id": department.pk, "name": department.name} if department else None

    def get_latest_version(self, workflow: Workflow) -> int | None:
        numbers = [v.number for v in workflow.versions.all()]  # prefetched
        return max(numbers) if numbers else None


class VersionOutput(serializers.ModelSerializer):
    published_by = serializers.EmailField(source="created_by.email", allow_null=True, default=None)

    class Meta:
        model = WorkflowVersion
        fields = [
            "id",
            "number",
            "content_hash",
            "changelog",
            "definition",
            "published_by",
            "published_at",
        ]


class StepChange(serializers.Serializer):
    id = serializers.CharField()
    fields = serializers.DictField()
    moved = serializers.BooleanField()


class DiffOutput(serializers.Serializer):
    steps_added = serializers.ListField(child=serializers.CharField())
    steps_removed = serializers.ListField(child=serializers.CharField())
    steps_changed = StepChange(many=True)
    inputs = serializers.DictField()
    outputs = serializers.DictField()
    identical = serializers.BooleanField()


class ImportInput(serializers.Serializer):
    flowpilot_workflow = serializers.IntegerField()
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=60, required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    definition = serializers.JSONField(required=False)


class PublishInput(serializers.Serializer):
    changelog = serializers.CharField(required=False, allow_blank=True, default="")


class RunInput(serializers.Serializer):
    inputs = serializers.DictField(required=False, default=dict)


class ValidateInput(serializers.Serializer):
    definition = serializers.JSONField()
    workflow_id = serializers.IntegerField(required=False)  # check vars against its own too


class ValidationProblem(serializers.Serializer):
    path = serializers.CharField()
    message = serializers.CharField()
    step = serializers.CharField(allow_null=True, required=False)


class ValidateOutput(serializers.Serializer):
    valid = serializers.BooleanField()
    errors = ValidationProblem(many=True)
