from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response

from control_plane.core.pagination import paginated_response
from control_plane.executions import services as execution_services
from control_plane.executions.api.serializers import ExecutionOutput
from control_plane.organizations.api.base import TenantApi
from control_plane.workflows import selectors, services
from control_plane.workflows.api.serializers import (
    PublishInput,
    RunInput,
    ValidateInput,
    ValidateOutput,
    VersionOutput,
    WorkflowInput,
    WorkflowOutput,
    WorkflowUpdateInput,
)
from control_plane.workflows.models import Workflow


class WorkflowApi(TenantApi):
    def get_workflow(self, workflow_id: int) -> Workflow:
        return get_object_or_404(
            selectors.workflow_list(organization=self.organization).prefetch_related("versions"),
            pk=workflow_id,
        )


class WorkflowListApi(WorkflowApi):
    required_permissions = {"GET": "workflow.read", "POST": "workflow.edit"}

    @extend_schema(responses=WorkflowOutput(many=True))
    def get(self, request):
        qs = selectors.workflow_list(
            organization=self.organization, status=request.query_params.get("status")
        ).prefetch_related("versions")
        return paginated_response(qs, request, self, WorkflowOutput)

    @extend_schema(request=WorkflowInput, responses={201: WorkflowOutput})
    def post(self, request):
        data = WorkflowInput(data=request.data)
        data.is_valid(raise_exception=True)
        workflow = services.workflow_create(
            organization=self.organization,
            created_by=request.user,
            name=data.validated_data["name"],
            slug=data.validated_data.get("slug") or "",
            description=data.validated_data["description"],
            definition=data.validated_data["definition"],
        )
        workflow = self.get_workflow(workflow.pk)
        return Response(WorkflowOutput(workflow).data, status=status.HTTP_201_CREATED)


class WorkflowDetailApi(WorkflowApi):
    required_permissions = {"GET": "workflow.read", "PATCH": "workflow.edit"}

    @extend_schema(responses=WorkflowOutput)
    def get(self, request, workflow_id: int):
        workflow = self.get_workflow(workflow_id)
        body = WorkflowOutput(workflow).data
        body["problems"] = services.definition_errors(workflow.draft_definition)
        return Response(body)

    @extend_schema(request=WorkflowUpdateInput, responses=WorkflowOutput)
    def patch(self, request, workflow_id: int):
        workflow = self.get_workflow(workflow_id)
        data = WorkflowUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        if "definition" in changes:
            changes["draft_definition"] = changes.pop("definition")
        services.workflow_update(workflow=workflow, **changes)
        return Response(WorkflowOutput(self.get_workflow(workflow_id)).data)


class WorkflowPublishApi(WorkflowApi):
    required_permissions = {"POST": "workflow.publish"}

    @extend_schema(request=PublishInput, responses={201: VersionOutput})
    def post(self, request, workflow_id: int):
        workflow = self.get_workflow(workflow_id)
        data = PublishInput(data=request.data)
        data.is_valid(raise_exception=True)
        version = services.workflow_publish(
            workflow=workflow, published_by=request.user, changelog=data.validated_data["changelog"]
        )
        return Response(VersionOutput(version).data, status=status.HTTP_201_CREATED)


class WorkflowVersionListApi(WorkflowApi):
    required_permissions = {"GET": "workflow.read"}

    @extend_schema(responses=VersionOutput(many=True))
    def get(self, request, workflow_id: int):
        workflow = self.get_workflow(workflow_id)
        versions = selectors.version_list(workflow=workflow)
        return paginated_response(versions, request, self, VersionOutput)


class WorkflowRunApi(WorkflowApi):
    required_permissions = {"POST": "workflow.run"}

    @extend_schema(request=RunInput, responses={202: ExecutionOutput})
    def post(self, request, workflow_id: int):
        workflow = self.get_workflow(workflow_id)
        data = RunInput(data=request.data)
        data.is_valid(raise_exception=True)
        execution = execution_services.workflow_run(
            workflow=workflow,
            inputs=data.validated_data["inputs"],
            kind="api" if request.auth else "manual",
            triggered_by=request.user,
        )
        return Response(ExecutionOutput(execution).data, status=status.HTTP_202_ACCEPTED)


class WorkflowValidateApi(TenantApi):
    required_permissions = {"POST": "workflow.edit"}

    @extend_schema(request=ValidateInput, responses=ValidateOutput)
    def post(self, request):
        data = ValidateInput(data=request.data)
        data.is_valid(raise_exception=True)
        errors = services.definition_errors(data.validated_data["definition"])
        return Response({"valid": not errors, "errors": errors})
