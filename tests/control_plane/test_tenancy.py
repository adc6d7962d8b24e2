"""Tenancy's two locks, proven at their own level: the ORM manager fails closed, and Postgres
row-level security shows the application role one organization's rows (or none)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from django.apps import apps
from django.db import DatabaseError, connection, transaction

from control_plane.core.rls import tenant_tables
from control_plane.core.tenancy import (
    TenantContextMissing,
    TenantManager,
    current_organization_id,
    tenant_context,
)
from control_plane.executions.models import WorkflowExecution
from control_plane.organizations.models import Department, OrganizationMember
from control_plane.workflows.models import Workflow
from flowpilot.config import APP_ROLE
from tests.factories import THREE_STEPS, make_member, make_published_workflow, run_workflow

pytestmark = pytest.mark.django_db


def tenant_models():
    return [
        model for model in apps.get_models() if isinstance(model._default_manager, TenantManager)
    ]


@pytest.fixture
def two_tenants(org, other_org, user):
    """acme and globex, each with a member, a department, a published workflow and a run."""
    bob = make_member(other_org, "bob@globex.test")
    for organization, owner in ((org, user), (other_org, bob)):
        make_published_workflow(organization, owner, THREE_STEPS, slug="triage")
        workflow = Workflow.objects.unscoped().get(organization=organization)
        run_workflow(workflow)
        with tenant_context(organization.pk):
            Department.objects.create(organization=organization, name="Ops")
    return org, other_org


@contextmanager
def app_role(org_id: int | None = None, user_id: int | None = None):
    """A cursor as the application role with the given settings. SET LOCAL outlives a
    savepoint, so everything is reset on the way out."""
    with connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL ROLE {APP_ROLE}")
        cursor.execute(
            "SELECT set_config('flowpilot.org_id', %s, true), "
            "set_config('flowpilot.user_id', %s, true)",
            ["" if org_id is None else str(org_id), "" if user_id is None else str(user_id)],
        )
        try:
            with transaction.atomic():
                yield cursor
        finally:
            cursor.execute("RESET ROLE")
            cursor.execute(
                "SELECT set_config('flowpilot.org_id', '', true), "
                "set_config('flowpilot.user_id', '', true)"
            )


def _count_as_app_role(table: str, org_id: int | None) -> int:
    """Rows of `table` the application role sees with `flowpilot.org_id` set to `org_id`."""
    with app_role(org_id) as cursor:
        cursor.execute(f"SELECT organization_id FROM {table}")  # noqa: S608
        rows = [row[0] for row in cursor.fetchall()]
    if org_id is not None:
        assert set(rows) <= {org_id}, f"{table} shows another organization's rows"
    return len(rows)


class TestRowLevelSecurity:
    def test_every_tenant_model_has_forced_row_security(self):
        expected = {model._meta.db_table for model in tenant_models()}
        assert len(expected) >= 10
        assert expected == set(tenant_tables())

    def test_app_role_sees_only_the_organization_set(self, two_tenants):
        acme, globex = two_tenants
        for table in tenant_tables():
            seen_by_acme = _count_as_app_role(table, acme.pk)
            total = _count_unrestricted(table)
            others = _count_unrestricted(table, exclude=acme.pk)
            if others:
                assert seen_by_acme < total, table
            assert _count_as_app_role(table, globex.pk) == others, table

    def test_app_role_with_no_organization_sees_nothing(self, two_tenants):
        for table in tenant_tables():
            if table == "organizations_organizationmember":
                continue  # a user's own memberships: covered below
            assert _count_as_app_role(table, None) == 0, table

    def test_memberships_are_visible_to_their_own_user_only(self, two_tenants, user):
        with app_role(user_id=user.pk) as cursor:
            cursor.execute("SELECT user_id FROM organizations_organizationmember")
            assert {row[0] for row in cursor.fetchall()} == {user.pk}

    def test_writing_a_row_for_another_organization_is_refused(self, two_tenants):
        acme, globex = two_tenants
        with pytest.raises(DatabaseError, match="row-level security"):
            with app_role(acme.pk) as cursor:
                cursor.execute(
                    "INSERT INTO organizations_department (organization_id, name, description, "
                    "created_at) VALUES (%s, 'Stolen', '', now())",
                    [globex.pk],
                )

    def test_updating_another_organizations_rows_touches_none(self, two_tenants):
        acme, globex = two_tenants
        with app_role(acme.pk) as cursor:
            cursor.execute(
                "UPDATE workflows_workflow SET name = 'pwned' WHERE organization_id = %s",
                [globex.pk],
            )
            assert cursor.rowcount == 0

    def test_the_orm_under_the_app_role_sees_one_tenant(self, two_tenants, as_app_role):
        acme, globex = two_tenants
        # Even the manager's escape hatch shows one organization when the database says so.
        with tenant_context(acme.pk):
            assert {w.organization_id for w in Workflow.objects.unscoped()} == {acme.pk}
            assert WorkflowExecution.objects.unscoped().filter(organization=globex).count() == 0


def _count_unrestricted(table: str, exclude: int | None = None) -> int:
    with connection.cursor() as cursor:
        if exclude is None:
            cursor.execute(f"SELECT count(*) FROM {table}")  # noqa: S608
        else:
            cursor.execute(
                f"SELECT count(*) FROM {table} WHERE organization_id <> %s",  # noqa: S608
                [exclude],
            )
        return cursor.fetchone()[0]


class TestTenantManager:
    def test_no_organization_in_context_is_an_error(self, two_tenants):
        for model in tenant_models():
            with pytest.raises(TenantContextMissing, match=model.__name__):
                model.objects.count()

    def test_context_scopes_every_query(self, two_tenants):
        acme, globex = two_tenants
        with tenant_context(acme.pk):
            assert {w.organization_id for w in Workflow.objects.all()} == {acme.pk}
            assert Workflow.objects.filter(organization=globex).count() == 0
            assert OrganizationMember.objects.count() == 1

    def test_escape_hatches_are_explicit(self, two_tenants):
        acme, globex = two_tenants
        assert Workflow.objects.unscoped().count() == 2
        assert Workflow.objects.for_organization(globex.pk).get().organization_id == globex.pk

    def test_contexts_nest_and_restore_the_database_setting(self, two_tenants):
        acme, globex = two_tenants

        def setting() -> str:
            with connection.cursor() as cursor:
                cursor.execute("SELECT current_setting('flowpilot.org_id', true)")
                return cursor.fetchone()[0] or ""

        with tenant_context(acme.pk):
            assert setting() == str(acme.pk) and current_organization_id() == acme.pk
            with tenant_context(globex.pk):
                assert setting() == str(globex.pk) and current_organization_id() == globex.pk
            assert setting() == str(acme.pk) and current_organization_id() == acme.pk
        assert current_organization_id() is None and setting() == ""
