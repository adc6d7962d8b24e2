from __future__ import annotations

import json

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from control_plane.connectors.selectors import connector_kinds
from control_plane.core.pagination import paginated_response
from control_plane.core.parsers import StrictJSONParser, TextYAMLParser, YAMLParser
from control_plane.executions import services as execution_services
from control_plane.executions.api.serializers import ExecutionOutput
from control_plane.organizations.api.base import TenantApi
from control_plane.organizations.models import Department, OrganizationMember
from control_plane.workflows import selectors, services
from control_plane.workflows.api.serializers import (
    DiffOutput,
    ImportInput,
    PublishInput,
    RunInput,
    ValidateInput,
    ValidateOutput,
    VersionOutput,
    WorkflowInput,
    WorkflowOutput,
    WorkflowUpdateInput,
)
from control_plane.workflows.diff import definition_diff
from control_plane.workflows.models import Workflow
from control_plane.workflows.variables import variable_names
from orchestration.steps.schema import definition_schema


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
        params = request.query_params
        qs = selectors.workflow_list(
            organization=self.organization,
            status=params.get("status"),
            search=params.get("search"),
            owner_id=params.get("owner"),
            department_id=params.get("department"),
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
        names = variable_names(organization_id=workflow.organization_id, workflow=workflow)
        connectors = connector_kinds(organization_id=workflow.organization_id)
        body["problems"] = services.definition_errors(
            workflow.draft_definition, variables=names, connectors=connectors
        )
        return Response(body)

    @extend_schema(request=WorkflowUpdateInput, responses=WorkflowOutput)
    def patch(self, request, workflow_id: int):
        workflow = self.get_workflow(workflow_id)
        data = WorkflowUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        if "definition" in changes:
            changes["draft_definition"] = changes.pop("definition")
        if "status" in changes and "workflow.publish" not in self.permissions():
            raise PermissionDenied("Changing a workflow's status needs workflow.publish.")
        if changes.get("owner") is not None:
            member = OrganizationMember.objects.filter(user_id=changes["owner"]).first()
            if member is None:
                raise ValidationError({"owner": ["not a member of this organization"]})
            changes["owner"] = member.user
        if changes.get("department") is not None:
            department = Department.objects.filter(pk=changes["department"]).first()
            if department is None:
                raise ValidationError({"department": ["unknown department"]})
            changes["department"] = department
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


class WorkflowValidateApi(WorkflowApi):
    required_permissions = {"POST": "workflow.edit"}

    @extend_schema(request=ValidateInput, responses=ValidateOutput)
    def post(self, request):
        data = ValidateInput(data=request.data)
        data.is_valid(raise_exception=True)
        workflow_id = data.validated_data.get("workflow_id")
        workflow = self.get_workflow(workflow_id) if workflow_id else None
        names = variable_names(organization_id=self.organization.pk, workflow=workflow)
        connectors = connector_kinds(organization_id=self.organization.pk)
        errors = services.definition_errors(
            data.validated_data["definition"], variables=names, connectors=connectors
        )
        return Response({"valid": not errors, "errors": errors})


class WorkflowVersionDetailApi(WorkflowApi):
    required_permissions = {"GET": "workflow.read"}

    @extend_schema(responses=VersionOutput)
    def get(self, request, workflow_id: int, number: int):
        workflow = self.get_workflow(workflow_id)
        version = get_object_or_404(selectors.version_list(workflow=workflow), number=number)
        return Response(VersionOutput(version).data)


class WorkflowRollbackApi(WorkflowApi):
    """Publish an earlier version again, as the next version."""

    required_permissions = {"POST": "workflow.publish"}

    @extend_schema(request=None, responses={201: VersionOutput})
    def post(self, request, workflow_id: int, number: int):
        version = services.workflow_rollback(
            workflow=self.get_workflow(workflow_id), number=number, published_by=request.user
        )
        return Response(VersionOutput(version).data, status=status.HTTP_201_CREATED)


class WorkflowDiffApi(WorkflowApi):
    """`?from=<version>&to=<version or "draft">`: steps added, removed and changed. Without
    `from`, the latest version; without `to`, the draft."""

    required_permissions = {"GET": "workflow.read"}

    def _definition(self, workflow, which: str | None, default: str) -> dict:
        which = which or default
        if which == "draft":
            return workflow.draft_definition
        if which == "latest":
            latest = selectors.workflow_latest_version(workflow=workflow)
            return latest.definition if latest else {}
        if not which.isdecimal():
            raise ValidationError({"from/to": ["a version number, 'latest' or 'draft'"]})
        version = selectors.version_list(workflow=workflow).filter(number=int(which)).first()
        if version is None:
            raise NotFound(f"version {which} not found")
        return version.definition

    @extend_schema(responses=DiffOutput)
    def get(self, request, workflow_id: int):
        workflow = self.get_workflow(workflow_id)
        old = self._definition(workflow, request.query_params.get("from"), "latest")
        new = self._definition(workflow, request.query_params.get("to"), "draft")
        return Response(definition_diff(old, new))


class WorkflowExportApi(WorkflowApi):
    """The workflow as a file (`?format=json` or `yaml`) that import turns back into the same
    workflow."""

    required_permissions = {"GET": "workflow.read"}

    @extend_schema(responses={200: dict})
    def get(self, request, workflow_id: int):
        import yaml

        workflow = self.get_workflow(workflow_id)
        document = services.workflow_export(workflow=workflow)
        kind = request.query_params.get("format", "json")
        if kind not in ("json", "yaml"):
            raise ValidationError({"format": ["json or yaml"]})
        if kind == "yaml":
            body = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
            content_type = "application/yaml"
        else:
            body = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
            content_type = "application/json"
        response = HttpResponse(body, content_type=f"{content_type}; charset=utf-8")
        filename = f"{workflow.slug}.flowpilot.{kind}"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response


class WorkflowImportApi(TenantApi):
    """A new draft from an exported file, sent as JSON or YAML (`Content-Type:
    application/yaml`); `?slug=` picks another slug when the file's is taken."""

    required_permissions = {"POST": "workflow.edit"}
    parser_classes = [StrictJSONParser, YAMLParser, TextYAMLParser]

    @extend_schema(request=ImportInput, responses={201: WorkflowOutput})
    def post(self, request):
        workflow = services.workflow_import(
            organization=self.organization,
            created_by=request.user,
            document=request.data,
            slug=request.query_params.get("slug", ""),
        )
        workflow = selectors.workflow_list(organization=self.organization).get(pk=workflow.pk)
        return Response(WorkflowOutput(workflow).data, status=status.HTTP_201_CREATED)


class WorkflowSchemaApi(APIView):
    """The definition language as JSON Schema, step types' config schemas included."""

    @extend_schema(responses={200: dict})
    def get(self, request):
        return Response(definition_schema())
