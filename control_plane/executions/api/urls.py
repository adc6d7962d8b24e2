from django.urls import path

from control_plane.executions.api import views

urlpatterns = [
    path("executions", views.ExecutionListApi.as_view(), name="execution-list"),
    path(
        "executions/<int:execution_id>", views.ExecutionDetailApi.as_view(), name="execution-detail"
    ),
    path(
        "executions/<int:execution_id>/cancel",
        views.ExecutionCancelApi.as_view(),
        name="execution-cancel",
    ),
    path(
        "executions/<int:execution_id>/rerun",
        views.ExecutionRerunApi.as_view(),
        name="execution-rerun",
    ),
    path(
        "executions/<int:execution_id>/logs",
        views.ExecutionLogListApi.as_view(),
        name="execution-logs",
    ),
]
