from django.urls import path

from control_plane.workflows.api import templates, triggers, variables, views

# Not tied to an organization: the definition language itself.
account_urlpatterns = [
    path("workflows/schema", views.WorkflowSchemaApi.as_view(), name="workflow-schema"),
]

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
    path(
        "workflows/<int:workflow_id>/versions/<int:number>",
        views.WorkflowVersionDetailApi.as_view(),
        name="workflow-version-detail",
    ),
    path(
        "workflows/<int:workflow_id>/versions/<int:number>/rollback",
        views.WorkflowRollbackApi.as_view(),
        name="workflow-rollback",
    ),
    path("workflows/<int:workflow_id>/diff", views.WorkflowDiffApi.as_view(), name="workflow-diff"),
    path(
        "workflows/<int:workflow_id>/export",
        views.WorkflowExportApi.as_view(),
        name="workflow-export",
    ),
    path("workflows/import", views.WorkflowImportApi.as_view(), name="workflow-import"),
    *variables.urlpatterns,
    *triggers.urlpatterns,
    *templates.urlpatterns,
]
