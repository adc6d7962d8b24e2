from django.db import migrations

from control_plane.core.rls import enable_row_level_security


class Migration(migrations.Migration):
    dependencies = [("organizations", "0003_tenancy")]

    operations = [
        enable_row_level_security("organizations_organizationmember", visible_to_user=True),
        enable_row_level_security("organizations_department"),
        enable_row_level_security("organizations_role"),
        enable_row_level_security("organizations_invitation"),
        enable_row_level_security("organizations_usagequota"),
    ]
