#!/usr/bin/env python
"""Tenancy benchmark: what the two locks (tenant manager + row-level security) and the
organization middleware cost.

Setup, in a private FLOWPILOT_HOME (embedded PostgreSQL, migrations): --orgs organizations,
each with one workflow and --executions executions (bulk-inserted as the owner), so the
executions table holds orgs × executions rows.

Part 1, queries in this process (p50/p95 of --iterations each, one organization at random per
iteration): the first page (50 rows) of an organization's executions, newest first, and the
count of its executions,
  - as the application role inside `tenant_context` (manager filter + RLS policy),
  - as the owner with the same explicit filter and no RLS (the baseline).

Part 2, over HTTP (uvicorn --workers, --concurrency client threads, --seconds per round):
  GET /api/v1/users/me                      signed in, no organization (baseline)
  GET /api/v1/orgs/{org}/executions         membership check + tenant transaction + page of 50
  GET /api/v1/executions  (X-Organization)  the same through the header

Run from the project root:

    .venv/bin/python bench/tenancy.py
    .venv/bin/python bench/tenancy.py --orgs 100 --executions 1000 --seconds 5
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

from _common import (
    database_and_children,
    hammer,
    machine,
    percentile,
    private_home,
    wait_for_health,
)


def populate(orgs: int, per_org: int) -> tuple[list[int], str, str]:
    """Organizations with one workflow each and `per_org` executions; returns (org ids, an
    owner's bearer token, that owner's org slug)."""
    from django.db import connections

    from control_plane.core.tenancy import system_context, tenant_context
    from control_plane.executions.models import WorkflowExecution
    from control_plane.organizations import services as organization_services
    from control_plane.users.models import User
    from control_plane.users.sessions import session_create
    from control_plane.workflows.models import Workflow, WorkflowVersion

    owner = User.objects.create_user("owner@bench.test", "bench-password-123", email_verified=True)
    ids = []
    started = time.monotonic()
    for index in range(orgs):
        organization = organization_services.organization_create(
            name=f"Bench {index}", slug=f"bench-{index}", owner=owner
        )
        ids.append(organization.pk)
        with tenant_context(organization.pk):
            workflow = Workflow.objects.create(
                organization=organization, name="w", slug="w", draft_definition={"steps": []}
            )
            version = WorkflowVersion.objects.create(
                organization=organization,
                workflow=workflow,
                number=1,
                definition={"steps": []},
                content_hash="0" * 64,
            )
        with system_context():
            WorkflowExecution.objects.bulk_create(
                WorkflowExecution(
                    organization=organization,
                    workflow=workflow,
                    version=version,
                    status="success",
                    inputs={"n": n},
                )
                for n in range(per_org)
            )
    with connections["owner"].cursor() as cursor:
        cursor.execute("ANALYZE")
    print(
        f"populated {orgs} organizations × {per_org} executions "
        f"in {time.monotonic() - started:.1f}s"
    )
    _, token = session_create(user=owner, kind="api", ip=None, user_agent="bench")
    return ids, token, "bench-0"


def timed(fn, iterations: int) -> tuple[float, float]:
    times = []
    for _ in range(iterations):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return percentile(times, 0.5) * 1000, percentile(times, 0.95) * 1000


def query_costs(ids: list[int], iterations: int) -> None:
    from control_plane.core.tenancy import tenant_context
    from control_plane.executions.models import WorkflowExecution

    def page_rls():
        with tenant_context(random.choice(ids)):
            list(WorkflowExecution.objects.order_by("-created_at", "-id")[:50])

    def page_owner():
        org = random.choice(ids)
        qs = WorkflowExecution.objects.unscoped().using("owner").filter(organization_id=org)
        list(qs.order_by("-created_at", "-id")[:50])

    def count_rls():
        with tenant_context(random.choice(ids)):
            WorkflowExecution.objects.count()

    def count_owner():
        org = random.choice(ids)
        WorkflowExecution.objects.unscoped().using("owner").filter(organization_id=org).count()

    print(f"\nQueries, {iterations} each, p50 / p95 in ms")
    for label, fn in (
        ("page of 50, app role + tenant_context (RLS)", page_rls),
        ("page of 50, owner, explicit filter (no RLS)", page_owner),
        ("count, app role + tenant_context (RLS)", count_rls),
        ("count, owner, explicit filter (no RLS)", count_owner),
    ):
        fn()  # warm
        p50, p95 = timed(fn, iterations)
        print(f"  {label:<46} {p50:7.2f} {p95:7.2f}")


def run(args: argparse.Namespace, home: Path) -> int:
    from flowpilot import processes, runtime

    with database_and_children() as (cfg, children):
        ids, token, slug = populate(args.orgs, args.executions)
        query_costs(ids, args.iterations)
        runtime.close_db()

        env = processes.child_env(cfg)
        log_dir = cfg.home / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        uvicorn = processes.control_plane_args(cfg) + ["--workers", str(args.workers)]
        children.append(processes.spawn(uvicorn, env, log_file=log_dir / "uvicorn.log"))
        wait_for_health(cfg, children)
        base = cfg.control_plane_url
        rounds = [
            ("/api/v1/users/me", {}, "signed in, no organization"),
            (f"/api/v1/orgs/{slug}/executions?page_size=50", {}, "org URL, page of 50"),
            ("/api/v1/executions?page_size=50", {"X-Organization": slug}, "header, page of 50"),
        ]

        def senders(path: str, headers: dict) -> list:
            headers = {"Authorization": f"Bearer {token}", **headers}
            return [lambda client: client.get(path, headers=headers)] * args.concurrency

        hammer(base, senders(rounds[1][0], {}), 1.0)  # warm-up
        print(
            f"\nHTTP: uvicorn --workers {args.workers}, {args.concurrency} client threads on the "
            f"same machine, {args.seconds:g}s per round"
        )
        print(f"machine: {machine()}")
        print(f"  {'request':<40} {'req/s':>7} {'p50':>9} {'p95':>9}  statuses")
        for path, headers, label in rounds:
            rate, latencies, statuses = hammer(base, senders(path, headers), args.seconds)
            p50, p95 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.95) * 1000
            print(f"  {label:<40} {rate:7.1f} {p50:7.1f}ms {p95:7.1f}ms  {statuses}")
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orgs", type=int, default=100)
    parser.add_argument("--executions", type=int, default=1000, help="per organization")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--home", type=Path, help="FLOWPILOT_HOME to use (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep FLOWPILOT_HOME (and its logs)")
    args = parser.parse_args(argv)
    with private_home(args.home, args.keep) as home:
        return run(args, home)


if __name__ == "__main__":
    sys.exit(main())
