#!/usr/bin/env python
"""Workflow definition benchmark: validating and publishing a 50-step workflow, and the JSON
Schema endpoint's size and time.

Part 1, in this process: `orchestration.steps.definition.validate` of a --steps workflow (a
chain with fan-out: every step a Jinja template that reads its upstream step's output, every
fifth an http.request), median and p95 of --iterations.

Part 2, over HTTP (uvicorn, one worker, private FLOWPILOT_HOME with the embedded PostgreSQL, no
Dagster running — publishing's reload request is refused at once and logged):
  POST /api/v1/workflows/validate            the 50-step definition
  PATCH draft + POST /api/v1/workflows/{id}/publish   (each publish a changed definition)
  GET /api/v1/workflows/schema               size (bytes, gzip) and time

Run from the project root:

    .venv/bin/python bench/workflows.py
    .venv/bin/python bench/workflows.py --steps 200 --iterations 50
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _common import database_and_children, machine, percentile, private_home, wait_for_health


def big_definition(steps: int, salt: int = 0) -> dict[str, Any]:
    chain: list[dict[str, Any]] = [
        {
            "id": "s0",
            "type": "transform.template",
            "config": {"template": f"start {{{{ inputs.name }}}} {salt}"},
        }
    ]
    for index in range(1, steps):
        upstream = f"s{(index - 1) // 2 if index % 3 == 0 else index - 1}"
        if index % 5 == 0:
            step = {
                "id": f"s{index}",
                "type": "http.request",
                "after": [upstream],
                "config": {
                    "url": "{{ inputs.url }}/items/" + f"{index}",
                    "method": "POST",
                    "json_body": {"from": f"{{{{ steps.{upstream}.output }}}}"},
                },
                "retry": {"max_attempts": 3, "backoff_seconds": 2},
                "timeout_seconds": 30,
            }
        else:
            step = {
                "id": f"s{index}",
                "type": "transform.template",
                "after": [upstream],
                "when": f"{{{{ steps.{upstream}.output is defined }}}}",
                "config": {"template": f"{{{{ steps.{upstream}.output.result | upper }}}}"},
            }
        chain.append(step)
    return {
        "inputs": {"name": {"type": "string", "default": "x"}, "url": {"type": "string"}},
        "steps": chain,
        "outputs": {"last": f"{{{{ steps.s{steps - 1}.output }}}}"},
    }


def ms(values: list[float]) -> str:
    p50, p95 = percentile(values, 0.5) * 1000, percentile(values, 0.95) * 1000
    return f"p50 {p50:7.2f} ms   p95 {p95:7.2f} ms"


def in_process(steps: int, iterations: int) -> None:
    from orchestration.steps.definition import validate

    definition = big_definition(steps)
    assert validate(definition) == [], validate(definition)[:3]
    times = []
    for _ in range(iterations):
        started = time.perf_counter()
        validate(definition)
        times.append(time.perf_counter() - started)
    print(f"\nvalidate() of a {steps}-step definition, {iterations} runs: {ms(times)}")


def over_http(args: argparse.Namespace) -> None:
    import httpx

    from flowpilot import processes

    with database_and_children() as (cfg, children):
        from control_plane.core.tenancy import tenant_context
        from control_plane.organizations import services as organization_services
        from control_plane.users.models import User
        from control_plane.users.sessions import session_create
        from control_plane.workflows import services as workflow_services

        user = User.objects.create_user(
            "bench@flowpilot.test", "bench-pass-1234", email_verified=True
        )
        organization = organization_services.organization_create(name="Bench", owner=user)
        with tenant_context(organization.pk):
            workflow = workflow_services.workflow_create(
                organization=organization, created_by=user, name="Big", slug="big"
            )
        _, token = session_create(user=user, kind="api", ip=None, user_agent="bench")
        from flowpilot import runtime

        runtime.close_db()
        log_dir = cfg.home / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        env = processes.child_env(cfg)
        children.append(
            processes.spawn(processes.control_plane_args(cfg), env, log_dir / "uvicorn.log")
        )
        wait_for_health(cfg, children)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=cfg.control_plane_url, headers=headers, timeout=60) as client:
            validate_times, publish_times = [], []
            body = {"definition": big_definition(args.steps)}
            for _ in range(3):  # warm-up
                client.post("/api/v1/workflows/validate", json=body)
            for _ in range(args.iterations):
                started = time.perf_counter()
                answer = client.post("/api/v1/workflows/validate", json=body)
                validate_times.append(time.perf_counter() - started)
                if not answer.json()["valid"]:
                    raise SystemExit(f"not valid: {answer.json()['errors'][:2]}")
            for salt in range(args.iterations):
                draft = {"definition": big_definition(args.steps, salt)}
                patched = client.patch(f"/api/v1/workflows/{workflow.pk}", json=draft)
                started = time.perf_counter()
                published = client.post(f"/api/v1/workflows/{workflow.pk}/publish", json={})
                publish_times.append(time.perf_counter() - started)
                if patched.status_code != 200 or published.status_code != 201:
                    raise SystemExit(f"publish failed: {published.status_code} {published.text}")
            schema_times = []
            for _ in range(args.iterations):
                started = time.perf_counter()
                schema = client.get("/api/v1/workflows/schema")
                schema_times.append(time.perf_counter() - started)
        print(f"\nOver HTTP (uvicorn, 1 worker), {args.iterations} requests each")
        print(f"machine: {machine()}")
        print(f"  POST validate ({args.steps} steps)        {ms(validate_times)}")
        print(f"  POST publish ({args.steps} steps)         {ms(publish_times)}")
        print(f"  GET schema                      {ms(schema_times)}")
        size = len(schema.content)
        print(
            f"  schema size: {size:,} bytes, {len(gzip.compress(schema.content)):,} gzipped, "
            f"{len(schema.json()['x-step-types'])} step types"
        )
        print(f"  mean publish {statistics.mean(publish_times) * 1000:.1f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--home", type=Path, help="FLOWPILOT_HOME to use (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep FLOWPILOT_HOME (and its logs)")
    args = parser.parse_args(argv)
    with private_home(args.home, args.keep):
        in_process(args.steps, args.iterations)
        over_http(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
