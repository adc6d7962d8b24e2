"""Live updates: every committed insert or update of an execution, a step or a log line sends
a NOTIFY on one channel, whichever process wrote it (web, Dagster run workers, the daemon).

The payload carries ids only (organization, execution, kind, row id, status): never row data,
because NOTIFY payloads are limited to 8000 bytes, are visible to every listener of the
database whatever its row-level security, and may not carry secrets. Listeners read the row
under the organization's tenant context (control_plane/executions/live.py)."""

from django.db import migrations

CHANNEL = "flowpilot_live"
TABLES = {
    "executions_workflowexecution": "execution",
    "executions_executionstep": "step",
    "executions_executionlog": "log",
}

FUNCTION = f"""
CREATE OR REPLACE FUNCTION flowpilot_live_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    kind text := TG_ARGV[0];
    execution_id bigint;
    status text;
BEGIN
    IF TG_OP = 'UPDATE' AND OLD IS NOT DISTINCT FROM NEW THEN
        RETURN NULL;  -- nothing changed
    END IF;
    IF kind = 'execution' THEN
        execution_id := NEW.id;
        status := NEW.status;
    ELSIF kind = 'step' THEN
        execution_id := NEW.execution_id;
        status := NEW.status;
    ELSE
        execution_id := NEW.execution_id;
        status := NULL;
    END IF;
    PERFORM pg_notify('{CHANNEL}', json_build_object(
        'org', NEW.organization_id,
        'execution', execution_id,
        'kind', kind,
        'id', NEW.id,
        'status', status
    )::text);
    RETURN NULL;
END
$$
"""


def _trigger(table: str, kind: str) -> str:
    return (
        f"CREATE TRIGGER flowpilot_live AFTER INSERT OR UPDATE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION flowpilot_live_notify('{kind}')"
    )


class Migration(migrations.Migration):
    dependencies = [("executions", "0006_launch_claim_rerun_logs")]

    operations = [
        migrations.RunSQL(
            sql=[FUNCTION, *(_trigger(table, kind) for table, kind in TABLES.items())],
            reverse_sql=[
                *(f"DROP TRIGGER IF EXISTS flowpilot_live ON {table}" for table in TABLES),
                "DROP FUNCTION IF EXISTS flowpilot_live_notify()",
            ],
        )
    ]
