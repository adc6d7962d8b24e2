from django.db import migrations

from control_plane.core.rls import enable_row_level_security


class Migration(migrations.Migration):
    dependencies = [("workflows", "0002_version_immutable")]

    operations = [
        enable_row_level_security("workflows_workflow"),
        enable_row_level_security("workflows_workflowversion"),
    ]
