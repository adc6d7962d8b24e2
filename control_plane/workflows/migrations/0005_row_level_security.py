from django.db import migrations

from control_plane.core.rls import enable_row_level_security


class Migration(migrations.Migration):
    dependencies = [("workflows", "0004_definitions_variables_triggers_templates")]

    operations = [
        enable_row_level_security("workflows_workflowvariable"),
        enable_row_level_security("workflows_workflowtrigger"),
        enable_row_level_security("workflows_workflowtemplate"),
    ]
