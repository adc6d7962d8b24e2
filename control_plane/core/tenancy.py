"""Tenancy, held by two locks.

1. The ORM: tenant models use `TenantManager`, whose querysets are filtered to the organization
   in context and which raises `TenantContextMissing` when there is none, so forgetting the
   context is an error rather than every tenant's rows. Escape hatches are explicit:
   `Model.objects.unscoped()` (with `system_database()` for system reads),
   `Model.objects.for_organization(id)`, and `with system_context():` for whole system tasks
   such as the admin.
2. PostgreSQL row-level security: every tenant table's policy compares `organization_id` with
   the transaction-local setting `flowpilot.org_id`, which `tenant_context` sets with
   `set_config(..., true)`. Requests and run workers connect as a role without BYPASSRLS, so
   even raw SQL sees one tenant.

`tenant_context` does both: it sets the context variable the manager reads and, inside a
transaction, the database settings (`flowpilot.org_id`, and `flowpilot.user_id` which lets a
user see their own memberships in other organizations)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.conf import settings
from django.db import connections, models, transaction

_organization_id: ContextVar[int | None] = ContextVar("flowpilot_organization_id", default=None)
_system: ContextVar[bool] = ContextVar("flowpilot_system", default=False)

ORG_SETTING = "flowpilot.org_id"
USER_SETTING = "flowpilot.user_id"


class TenantContextMissing(RuntimeError):
    """Tenant data was queried with no organization in context."""


def current_organization_id() -> int | None:
    return _organization_id.get()


def system_database() -> str:
    """The alias for explicit system tasks across tenants (the owner role; BYPASSRLS)."""
    return settings.SYSTEM_DATABASE


def in_system_context() -> bool:
    return _system.get()


@contextmanager
def system_context() -> Iterator[None]:
    """An explicit system task across organizations (the admin, maintenance): tenant managers
    return every organization's rows, and `SystemContextRouter` sends the queries to the
    system database."""
    token = _system.set(True)
    try:
        yield
    finally:
        _system.reset(token)


class SystemContextRouter:
    """Database router: inside `system_context`, reads and writes go to the system database."""

    def db_for_read(self, model, **hints):
        return system_database() if in_system_context() else None

    db_for_write = db_for_read

    def allow_relation(self, obj1, obj2, **hints):
        return True  # both aliases are one database, seen through two roles


def _swap(using: str, values: dict[str, str]) -> dict[str, str]:
    """Set transaction-local settings; returns what they were."""
    names = list(values)
    select = ", ".join(
        f"current_setting('{name}', true), set_config('{name}', %s, true)" for name in names
    )
    with connections[using].cursor() as cursor:
        cursor.execute(f"SELECT {select}", [values[name] for name in names])  # noqa: S608
        row = cursor.fetchone()
    return {name: row[2 * index] or "" for index, name in enumerate(names)}


@contextmanager
def tenant_context(
    organization_id: int | None, *, user_id: int | None = None, using: str = "default"
) -> Iterator[None]:
    """Act for one organization (and user): in the ORM, and in the database for the
    transaction this opens (a savepoint when one is open already). Leaving restores the
    previous values, so contexts nest."""
    values = {ORG_SETTING: "" if organization_id is None else str(int(organization_id))}
    if user_id is not None:
        values[USER_SETTING] = str(int(user_id))
    token = _organization_id.set(organization_id)
    outermost = not connections[using].in_atomic_block  # its end clears the settings anyway
    try:
        with transaction.atomic(using=using):
            previous = _swap(using, values)
            yield
            if not outermost and not connections[using].needs_rollback:
                _swap(using, previous)
    finally:
        _organization_id.reset(token)


class TenantQuerySet(models.QuerySet):
    pass


class TenantManager(models.Manager.from_queryset(TenantQuerySet)):
    """Querysets scoped to the organization in context; none in context is an error."""

    def get_queryset(self) -> TenantQuerySet:
        organization_id = current_organization_id()
        if organization_id is None and in_system_context():
            return super().get_queryset()
        if organization_id is None:
            raise TenantContextMissing(
                f"{self.model.__name__} queried with no organization in context: use "
                "tenant_context(organization_id), or .unscoped() for a system task"
            )
        return super().get_queryset().filter(organization_id=organization_id)

    def unscoped(self) -> TenantQuerySet:
        """Every tenant's rows, as far as the database role allows: for system tasks."""
        return super().get_queryset()

    def for_organization(self, organization_id: int) -> TenantQuerySet:
        return super().get_queryset().filter(organization_id=organization_id)
