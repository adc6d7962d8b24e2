"""Row-level security for tenant tables, as migration operations.

A policy compares the row's `organization_id` with the transaction-local setting
`flowpilot.org_id` (set by `tenant_context`); an unset or empty setting matches no row rather
than raising. `FORCE` applies the policy to the table owner too; only roles with BYPASSRLS
(superusers, and the owner role used for migrations and system tasks) pass by."""

from __future__ import annotations

from django.db import migrations

CURRENT_ORG = "NULLIF(current_setting('flowpilot.org_id', true), '')::bigint"
CURRENT_USER = "NULLIF(current_setting('flowpilot.user_id', true), '')::bigint"
POLICY = "tenant_isolation"


def enable_row_level_security(table: str, *, visible_to_user: bool = False) -> migrations.RunSQL:
    """Guard `table`. With `visible_to_user`, a row whose `user_id` is the current user is also
    readable (a user lists their own memberships across organizations); writes always need the
    organization."""
    using = f"organization_id = {CURRENT_ORG}"
    if visible_to_user:
        using = f"({using}) OR user_id = {CURRENT_USER}"
    return migrations.RunSQL(
        sql=[
            f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
            f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY",
            f"CREATE POLICY {POLICY} ON {table} USING ({using}) "
            f"WITH CHECK (organization_id = {CURRENT_ORG})",
        ],
        reverse_sql=[
            f"DROP POLICY IF EXISTS {POLICY} ON {table}",
            f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY",
            f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY",
        ],
    )


def tenant_tables() -> list[str]:
    """Every table with row-level security on, from the catalog (for tests and checks)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname FROM pg_class WHERE relrowsecurity AND relforcerowsecurity "
            "AND relkind = 'r' ORDER BY relname"
        )
        return [row[0] for row in cursor.fetchall()]
