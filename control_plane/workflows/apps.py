from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "control_plane.workflows"
    label = "workflows"
