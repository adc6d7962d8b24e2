from django.db import migrations

# A published version never changes: the database itself refuses UPDATE, whatever code runs.
FORWARD = """
CREATE OR REPLACE FUNCTION flowpilot_refuse_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'published workflow versions are immutable'
    USING ERRCODE = 'integrity_constraint_violation';
END $$;
CREATE TRIGGER workflowversion_immutable BEFORE UPDATE ON workflows_workflowversion
  FOR EACH ROW EXECUTE FUNCTION flowpilot_refuse_update();
"""
BACKWARD = "DROP TRIGGER IF EXISTS workflowversion_immutable ON workflows_workflowversion;"


class Migration(migrations.Migration):
    dependencies = [("workflows", "0001_initial")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
