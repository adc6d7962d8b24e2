from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "control_plane.core"
    label = "core"
