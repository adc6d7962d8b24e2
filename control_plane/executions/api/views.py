from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response

from control_plane.core.pagination import paginated_response
from control_plane.executions import control, logs, selectors
from control_plane.executions.api.serializers import (
    ExecutionOutput,
    LogFilterInput,
    LogOutput,
    RerunInput,
)
from control_plane.organizations.api.base import TenantApi


class ExecutionListApi(TenantApi):
    required_permissions = {"GET": "execution.read"}

    @extend_schema(responses=ExecutionOutput(many=True))
    def get(self, request):
        workflow = request.query_params.get("workflow")
        qs = selectors.execution_list(
            organization=self.organization,
            workflow_id=int(workflow) if workflow and workflow.isdigit() else None,
            status=request.query_params.get("status"),
        ).select_related("trigger_event")
        return paginated_response(qs, request, self, ExecutionOutput, {"with_steps": False})


class ExecutionDetailApi(TenantApi):
    required_permissions = {"GET": "execution.read"}

    @extend_schema(responses=ExecutionOutput)
    def get(self, request, execution_id: int):
        qs = selectors.execution_list(organization=self.organization).prefetch_related("steps")
        execution = get_object_or_404(qs.select_related("trigger_event"), pk=execution_id)
        return Response(ExecutionOutput(execution).data)


class ExecutionCancelApi(TenantApi):
    """Cancel a queued or running execution (202: Dagster is stopping the run; 200: canceled)."""

    required_permissions = {"POST": "workflow.run"}

    @extend_schema(request=None, responses={200: ExecutionOutput, 202: ExecutionOutput})
    def post(self, request, execution_id: int):
        execution = control.execution_cancel(execution_id=execution_id)
        code = 200 if execution.status == "canceled" else 202
        return Response(ExecutionOutput(execution, context={"with_steps": False}).data, status=code)


class ExecutionLogListApi(TenantApi):
    """An execution's log, oldest line first, a page at a time; `?step=`, `?level=` (one or
    more, comma-separated) and `?after=<line id>` narrow it."""

    required_permissions = {"GET": "execution.read"}

    @extend_schema(parameters=[LogFilterInput], responses=LogOutput(many=True))
    def get(self, request, execution_id: int):
        filters = LogFilterInput(data=request.query_params)
        filters.is_valid(raise_exception=True)
        qs = logs.execution_logs(
            organization=self.organization,
            execution_id=execution_id,
            step_id=filters.validated_data.get("step"),
            levels=filters.validated_data.get("level"),
            after_id=filters.validated_data.get("after"),
        )
        return paginated_response(qs, request, self, LogOutput)


class ExecutionRerunApi(TenantApi):
    """Re-run a finished execution (`{"strategy": "all" | "from_failure"}`): 202 with the new
    execution, whose run Dagster re-executes from the old one's."""

    required_permissions = {"POST": "workflow.run"}

    @extend_schema(request=RerunInput, responses={202: ExecutionOutput})
    def post(self, request, execution_id: int):
        body = request.data if isinstance(request.data, dict) else {}
        # The service checks the strategy after the execution: another organization's id is a
        # 404 whatever the body says.
        execution = control.execution_rerun(
            execution_id=execution_id, strategy=body.get("strategy"), user=request.user
        )
        return Response(ExecutionOutput(execution, context={"with_steps": False}).data, status=202)
