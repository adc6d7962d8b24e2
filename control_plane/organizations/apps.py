from django.apps import AppConfig


class OrganizationsConfig(AppConfig):
    name = "control_plane.organizations"
    label = "organizations"
