from django.db import migrations

from control_plane.core.rls import enable_row_level_security


class Migration(migrations.Migration):
    dependencies = [("executions", "0003_initial")]

    operations = [
        enable_row_level_security("executions_workflowexecution"),
        enable_row_level_security("executions_executionstep"),
        enable_row_level_security("executions_triggerevent"),
    ]
