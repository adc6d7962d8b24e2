from django.db import migrations

from control_plane.core.rls import enable_row_level_security


class Migration(migrations.Migration):
    dependencies = [("connectors", "0001_initial")]

    operations = [enable_row_level_security("connectors_connector")]
