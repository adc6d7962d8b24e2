from django.urls import path

from control_plane.connectors.api.views import ConnectorDetailApi, ConnectorListApi

urlpatterns = [
    path("connectors", ConnectorListApi.as_view(), name="connector-list"),
    path("connectors/<int:connector_id>", ConnectorDetailApi.as_view(), name="connector-detail"),
]
