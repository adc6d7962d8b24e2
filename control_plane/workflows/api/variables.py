"""Workflow variables over HTTP: the organization's (`variables`) and a workflow's own
(`workflows/<id>/variables`). One pair of views answers both URL forms; a variable is only
found under the URL of its own scope. Secret values are write-only."""

from __future__ import annotations

from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response

from control_plane.core.errors import NotFoundError
from control_plane.core.pagination import paginated_response
from control_plane.organizations.api.base import TenantApi
from control_plane.users.api.views import valid_data
from control_plane.workflows import selectors
from control_plane.workflows import variables as services
from control_plane.workflows.models import Workflow, WorkflowVariable


class VariableInput(serializers.Serializer):
    name = serializers.CharField(max_length=63)
    type = serializers.ChoiceField(choices=WorkflowVariable.Type.choices)
    value = serializers.JSONField(allow_null=True)
    description = serializers.CharField(
        max_length=500, required=False, allow_blank=True, default=""
    )
    is_secret = serializers.BooleanField(required=False, default=False)


class VariableUpdateInput(serializers.Serializer):
    name = serializers.CharField(max_length=63, required=False)
    type = serializers.ChoiceField(choices=WorkflowVariable.Type.choices, required=False)
    value = serializers.JSONField(allow_null=True, required=False)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)
    is_secret = serializers.BooleanField(required=False)


class VariableOutput(serializers.ModelSerializer):
    workflow = serializers.IntegerField(source="workflow_id", allow_null=True)
    value = serializers.SerializerMethodField()
    has_value = serializers.SerializerMethodField()

    class Meta:
        model = WorkflowVariable
        fields = [
            "id",
            "name",
            "type",
            "description",
            "is_secret",
            "value",
            "has_value",
            "workflow",
            "created_at",
            "updated_at",
        ]

    @extend_schema_field(OpenApiTypes.ANY)
    def get_value(self, variable: WorkflowVariable) -> object:
        return None if variable.is_secret else variable.value

    def get_has_value(self, variable: WorkflowVariable) -> bool:
        # Services always store a value (json null included); the secret is not decrypted here.
        return True


class VariableApi(TenantApi):
    def get_workflow(self, workflow_id: int | None) -> Workflow | None:
        if workflow_id is None:
            return None
        workflow = (
            selectors.workflow_list(organization=self.organization).filter(pk=workflow_id).first()
        )
        if workflow is None:
            raise NotFoundError("workflow not found")
        return workflow


class VariableListApi(VariableApi):
    required_permissions = {"GET": "workflow.read", "POST": "workflow.edit"}

    @extend_schema(
        parameters=[OpenApiParameter("search", str, description="part of the name")],
        responses=VariableOutput(many=True),
    )
    def get(self, request, workflow_id: int | None = None):
        workflow = self.get_workflow(workflow_id)
        qs = services.variable_list(
            workflow=workflow, search=request.query_params.get("search", "")
        )
        return paginated_response(qs, request, self, VariableOutput)

    @extend_schema(request=VariableInput, responses={201: VariableOutput})
    def post(self, request, workflow_id: int | None = None):
        workflow = self.get_workflow(workflow_id)
        data = valid_data(VariableInput, request)
        variable = services.variable_create(
            organization=self.organization, created_by=request.user, workflow=workflow, **data
        )
        return Response(VariableOutput(variable).data, status=status.HTTP_201_CREATED)


class VariableDetailApi(VariableApi):
    required_permissions = {
        "GET": "workflow.read",
        "PATCH": "workflow.edit",
        "DELETE": "workflow.edit",
    }

    def get_variable(self, variable_id: int, workflow_id: int | None) -> WorkflowVariable:
        workflow = self.get_workflow(workflow_id)
        return services.variable_get(variable_id=variable_id, workflow=workflow)

    @extend_schema(responses=VariableOutput)
    def get(self, request, variable_id: int, workflow_id: int | None = None):
        return Response(VariableOutput(self.get_variable(variable_id, workflow_id)).data)

    @extend_schema(request=VariableUpdateInput, responses=VariableOutput)
    def patch(self, request, variable_id: int, workflow_id: int | None = None):
        variable = self.get_variable(variable_id, workflow_id)  # 404 before any input error
        data = valid_data(VariableUpdateInput, request)
        variable = services.variable_update(variable=variable, **data)
        return Response(VariableOutput(variable).data)

    @extend_schema(responses={204: None})
    def delete(self, request, variable_id: int, workflow_id: int | None = None):
        services.variable_delete(variable=self.get_variable(variable_id, workflow_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


urlpatterns = [
    path("variables", VariableListApi.as_view(), name="variable-list"),
    path("variables/<int:variable_id>", VariableDetailApi.as_view(), name="variable-detail"),
    path(
        "workflows/<int:workflow_id>/variables",
        VariableListApi.as_view(),
        name="workflow-variable-list",
    ),
    path(
        "workflows/<int:workflow_id>/variables/<int:variable_id>",
        VariableDetailApi.as_view(),
        name="workflow-variable-detail",
    ),
]
