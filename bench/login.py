#!/usr/bin/env python
"""Login benchmark: what one password check costs with each hasher, and how many logins per
second the control plane serves on this machine with the configured one (Argon2).

Part 1, in this process: verifying a password against a stored hash, --checks times per
hasher: Argon2id with Django's parameters, RFC 9106's second recommendation, OWASP's two
recommendations (the last is FlowPilot's default), PBKDF2-SHA256 and scrypt. Reported as the
median wall and CPU time of one check, and the checks per second two cores allow.

Part 2, through HTTP: in a private FLOWPILOT_HOME (embedded PostgreSQL, migrations), the control
plane under uvicorn with --workers (default: one per CPU) and the development settings (the
configured Argon2id first in PASSWORD_HASHERS). --concurrency client threads, each signing in
as its own user, for --seconds each in three rounds:

  ok         the right password: a session and a token per request (hash check + 3 writes)
  wrong      a wrong password for an existing account (hash check + 1 write), under a
             raised lockout limit so every request is checked rather than refused
  locked     an account past its lockout: answered 429 before any hashing

For each: requests per second and latency p50/p95.

Run from the project root:

    .venv/bin/python bench/login.py
    .venv/bin/python bench/login.py --seconds 5 --concurrency 8
    ARGON2_MEMORY_KIB=102400 ARGON2_PARALLELISM=8 .venv/bin/python bench/login.py  # Django's
"""

from __future__ import annotations

import argparse
import os
import statistics
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

PASSWORD = "violet-harbour-lantern-42"
# label -> (hasher, its parameters); Argon2 as (memory KiB, passes, lanes).
ARGON2 = {
    "argon2id 100 MiB t=2 p=8 (Django)": (102400, 2, 8),
    "argon2id 64 MiB t=3 p=4 (RFC 9106)": (65536, 3, 4),
    "argon2id 46 MiB t=1 p=1 (OWASP)": (47104, 1, 1),
    "argon2id 19 MiB t=2 p=1 (OWASP, ours)": (19456, 2, 1),
}


def hashers() -> dict:
    from django.contrib.auth.hashers import (
        Argon2PasswordHasher,
        PBKDF2PasswordHasher,
        ScryptPasswordHasher,
    )

    result = {}
    for label, (memory, passes, lanes) in ARGON2.items():
        hasher = Argon2PasswordHasher()
        hasher.memory_cost, hasher.time_cost, hasher.parallelism = memory, passes, lanes
        result[label] = hasher
    result["pbkdf2_sha256 1,000,000 it. (Django)"] = PBKDF2PasswordHasher()
    result["scrypt n=2^14 r=8 (Django)"] = ScryptPasswordHasher()
    return result


def hasher_costs(checks: int) -> None:
    """Wall time and CPU time of one check: lanes > 1 run in threads, so CPU time is what
    bounds throughput."""
    print(f"\nOne password check, median of {checks}")
    print(f"  {'hasher':<40} {'wall':>9} {'cpu':>9} {'2 cores':>9}")
    for label, hasher in hashers().items():
        encoded = hasher.encode(PASSWORD, hasher.salt())
        walls, cpus = [], []
        for _ in range(checks):
            wall, cpu = time.perf_counter(), time.process_time()
            if not hasher.verify(PASSWORD, encoded):
                raise SystemExit(f"{label}: the password does not check")
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        print(f"  {label:<40} {wall * 1000:>6.1f} ms {cpu * 1000:>6.1f} ms {2 / cpu:>7.1f}/s")


def login_senders(bodies: list[dict]) -> list:
    """One sender per client thread, each signing in with its own body."""
    path = "/api/v1/auth/login"
    return [lambda client, body=body: client.post(path, json=body) for body in bodies]


def run(args: argparse.Namespace, home: Path) -> int:
    from flowpilot import processes, runtime

    with database_and_children() as (cfg, children):
        from control_plane.users.models import LoginAttempt, User

        hasher_costs(args.checks)
        emails = [f"bench{n}@flowpilot.test" for n in range(args.concurrency)]
        for email in emails:
            if not User.objects.filter(email=email).exists():
                User.objects.create_user(email, PASSWORD, email_verified=True)
        runtime.close_db()

        env = processes.child_env(cfg)
        env["LOGIN_MAX_FAILURES_PER_IP"] = "0"  # 0 = no IP limit: all clients share 127.0.0.1
        log_dir = cfg.home / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        uvicorn = processes.control_plane_args(cfg) + ["--workers", str(args.workers)]
        children.append(processes.spawn(uvicorn, env, log_file=log_dir / "uvicorn.log"))
        wait_for_health(cfg, children)

        base = cfg.control_plane_url
        correct = [{"email": e, "password": PASSWORD} for e in emails]
        hammer(base, login_senders(correct), 1.0)  # warm-up
        # (round, bodies, LOGIN_MAX_FAILURES_PER_ACCOUNT): the wrong-password round lifts the
        # account limit far enough that every guess is checked rather than refused.
        rounds = [
            ("ok", correct, None),
            ("wrong", [{"email": e, "password": "not-it"} for e in emails], "1000000"),
            ("locked", correct, None),
        ]
        results = {}
        for name, bodies, account_limit in rounds:
            limit = env.get("LOGIN_MAX_FAILURES_PER_ACCOUNT")
            if account_limit != limit:
                env.pop("LOGIN_MAX_FAILURES_PER_ACCOUNT", None)
                if account_limit:
                    env["LOGIN_MAX_FAILURES_PER_ACCOUNT"] = account_limit
                processes.stop(children.pop())
                children.append(processes.spawn(uvicorn, env, log_file=log_dir / "uvicorn.log"))
                wait_for_health(cfg, children)
            results[name] = hammer(base, login_senders(bodies), args.seconds)

        print(
            f"\nLogin over HTTP: uvicorn --workers {args.workers}, {args.concurrency} client "
            f"threads on the same machine, {args.seconds:g}s per round"
        )
        print(f"machine: {machine()}")
        print(f"  {'round':<8} {'req/s':>8} {'p50':>9} {'p95':>9}  statuses")
        for name, (rate, latencies, statuses) in results.items():
            p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
            print(
                f"  {name:<8} {rate:>8.1f} {p50 * 1000:>7.1f}ms {p95 * 1000:>7.1f}ms  "
                f"{dict(sorted(statuses.items()))}"
            )
        print(f"  login attempts recorded: {LoginAttempt.objects.count()}")
        runtime.close_db()
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--checks", type=int, default=20)
    parser.add_argument("--home", type=Path, help="FLOWPILOT_HOME to use (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep FLOWPILOT_HOME (and its logs)")
    args = parser.parse_args(argv)
    with private_home(args.home, args.keep) as home:
        return run(args, home)


if __name__ == "__main__":
    sys.exit(main())
