from django.urls import path

from control_plane.workflows.api import views

urlpatterns = [
    path("workflows", views.WorkflowListApi.as_view(), name="workflow-list"),
    path("workflows/validate", views.WorkflowValidateApi.as_view(), name="workflow-validate"),
    path("workflows/<int:workflow_id>", views.WorkflowDetailApi.as_view(), name="workflow-detail"),
    path(
        "workflows/<int:workflow_id>/publish",
        views.WorkflowPublishApi.as_view(),
        name="workflow-publish",
    ),
    path(
        "workflows/<int:workflow_id>/versions",
        views.WorkflowVersionListApi.as_view(),
        name="workflow-versions",
    ),
    path("workflows/<int:workflow_id>/run", views.WorkflowRunApi.as_view(), name="workflow-run"),
]
