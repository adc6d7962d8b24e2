from django.contrib.admin.apps import AdminConfig


class FlowPilotAdminConfig(AdminConfig):
    """Django's admin with FlowPilot's sign-in (lockout, MFA, tracked sessions)."""

    default_site = "control_plane.users.admin_site.FlowPilotAdminSite"
