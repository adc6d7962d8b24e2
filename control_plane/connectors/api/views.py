"""Connectors over HTTP. Reading needs `workflow.read` (editors pick connectors by name);
creating, changing and deleting need `connector.manage`. Credentials are write-only."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.response import Response

from control_plane.connectors import selectors, services
from control_plane.connectors.api.serializers import (
    ConnectorInput,
    ConnectorOutput,
    ConnectorUpdateInput,
)
from control_plane.connectors.models import Connector
from control_plane.core.pagination import paginated_response
from control_plane.organizations.api.base import TenantApi
from control_plane.users.api.views import valid_data


class ConnectorListApi(TenantApi):
    required_permissions = {"GET": "workflow.read", "POST": "connector.manage"}

    @extend_schema(
        parameters=[
            OpenApiParameter("kind", str, enum=Connector.Kind.values, description="only this kind"),
            OpenApiParameter("search", str, description="part of the name"),
        ],
        responses=ConnectorOutput(many=True),
    )
    def get(self, request):
        qs = selectors.connector_list(
            kind=request.query_params.get("kind", ""),
            search=request.query_params.get("search", ""),
        )
        return paginated_response(qs, request, self, ConnectorOutput)

    @extend_schema(request=ConnectorInput, responses={201: ConnectorOutput})
    def post(self, request):
        data = valid_data(ConnectorInput, request)
        connector = services.connector_create(
            organization=self.organization, created_by=request.user, **data
        )
        return Response(ConnectorOutput(connector).data, status=status.HTTP_201_CREATED)


class ConnectorDetailApi(TenantApi):
    required_permissions = {
        "GET": "workflow.read",
        "PATCH": "connector.manage",
        "DELETE": "connector.manage",
    }

    @extend_schema(responses=ConnectorOutput)
    def get(self, request, connector_id: int):
        return Response(ConnectorOutput(selectors.connector_get(connector_id=connector_id)).data)

    @extend_schema(request=ConnectorUpdateInput, responses=ConnectorOutput)
    def patch(self, request, connector_id: int):
        connector = selectors.connector_get(connector_id=connector_id)  # 404 before input errors
        data = valid_data(ConnectorUpdateInput, request)
        connector = services.connector_update(connector=connector, **data)
        return Response(ConnectorOutput(connector).data)

    @extend_schema(responses={204: None})
    def delete(self, request, connector_id: int):
        services.connector_delete(connector=selectors.connector_get(connector_id=connector_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
