from django.apps import AppConfig


class UsersConfig(AppConfig):
    name = "control_plane.users"
    label = "users"
