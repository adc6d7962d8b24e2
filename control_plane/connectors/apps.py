from django.apps import AppConfig


class ConnectorsConfig(AppConfig):
    name = "control_plane.connectors"
    label = "connectors"
