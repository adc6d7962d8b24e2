from __future__ import annotations

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from control_plane.core import dagster


class HealthzApi(APIView):
    """The process is alive and serving requests."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(responses={200: dict})
    def get(self, request):
        return Response({"status": "ok"})


def _check_database() -> tuple[bool, str]:
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute("SELECT 1")
    return True, "ok"


def _check_migrations() -> tuple[bool, str]:
    connection = connections[DEFAULT_DB_ALIAS]
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return (not plan, "ok" if not plan else f"{len(plan)} unapplied migration(s)")


def _check_dagster() -> tuple[bool, str]:
    return True, f"dagster {dagster.version()}"


class ReadyzApi(APIView):
    """Ready for traffic: database reachable, migrations applied, Dagster reachable."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(responses={200: dict, 503: dict})
    def get(self, request):
        checks = {}
        for name, check in (
            ("database", _check_database),
            ("migrations", _check_migrations),
            ("dagster", _check_dagster),
        ):
            try:
                ok, detail = check()
            except Exception as exc:  # each failure is reported, not raised
                ok, detail = False, f"{type(exc).__name__}: {exc}"[:300]
            checks[name] = {"ok": ok, "detail": detail}
        ready = all(c["ok"] for c in checks.values())
        return Response(
            {"status": "ready" if ready else "unavailable", "checks": checks},
            status=200 if ready else 503,
        )
