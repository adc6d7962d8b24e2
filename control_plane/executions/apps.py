from django.apps import AppConfig


class ExecutionsConfig(AppConfig):
    name = "control_plane.executions"
    label = "executions"
