"""The `flowpilot` command: embedded database, migrations, seed, the demo, and `up`."""

from __future__ import annotations

import argparse
import sys
import time

from flowpilot import config, processes, runtime, shards


def cmd_db(args: argparse.Namespace) -> int:
    from flowpilot import pg

    cfg = config.load()
    if args.action == "url":
        print(cfg.database_url)
        return 0
    if not cfg.embedded:
        print(
            "DATABASE_URL and DAGSTER_PG_URL are set: no embedded server to manage", file=sys.stderr
        )
        return 2
    if args.action == "start":
        started = pg.start(cfg)
        print(f"{'started' if started else 'already running'}: {cfg.pg_dir}")
    elif args.action == "stop":
        print("stopped" if pg.stop(cfg) else "not running")
    elif args.action == "status":
        pid = pg.server_pid(cfg.pg_dir)
        print(f"running (pid {pid})" if pid else "not running")
        return 0 if pid else 3
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    with runtime.database(config.load()):
        runtime.migrate()
        print("migrated")
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    with runtime.database(config.load()):
        runtime.migrate()
        from control_plane.core.seed import DEMO_PASSWORD, seed_demo

        seed = seed_demo()
        if args.json:
            import json

            print(
                json.dumps(
                    {
                        "email": seed.user.email,
                        "password": DEMO_PASSWORD,
                        "token": seed.token,
                        "organization": seed.organization.slug,
                        "workflow_id": seed.workflow.pk,
                        "version": seed.version.number,
                    }
                )
            )
        else:
            print(f"login {seed.user.email} / {DEMO_PASSWORD}  (API token {seed.token})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from flowpilot import demo

    return demo.run()


def cmd_up(args: argparse.Namespace) -> int:
    cfg = config.load()
    processes.sigterm_exits()
    children: list = []
    with runtime.database(cfg):
        try:
            runtime.migrate()
            from control_plane.core.seed import DEMO_PASSWORD, seed_demo

            seed = seed_demo()
            runtime.close_db()
            env = processes.child_env(cfg)
            children.append(processes.spawn(processes.control_plane_args(cfg), env))
            workspace = None
            if cfg.code_server == "flowpilot":
                # One code server per shard, reloaded in place; Dagster connects to them.
                sockets = [
                    config.code_server_socket(cfg, shards.location_name(shard, cfg.code_shards))
                    for shard in range(cfg.code_shards)
                ]
                for shard, path in enumerate(sockets):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.unlink(missing_ok=True)  # left by a FlowPilot that was killed
                    args = processes.code_server_args(cfg, shard, path)
                    children.append(processes.spawn(args, env))
                for path in sockets:
                    if not processes.wait_until(
                        lambda path=path: processes.code_server_ready(path), timeout=600
                    ):
                        print(f"the code server on {path} did not start", file=sys.stderr)
                        return 1
                workspace = shards.grpc_workspace_file(cfg, sockets)
            children.append(processes.spawn(processes.dagster_dev_args(cfg, workspace), env))
            web_ok = processes.wait_until(
                lambda: processes.http_ok(f"{cfg.control_plane_url}/healthz"), timeout=60
            )
            dagster_ok = processes.wait_until(
                lambda: processes.http_ok(f"{cfg.dagster_url}/server_info"), timeout=120
            )
            if not (web_ok and dagster_ok):
                print("a process did not come up; see the output above", file=sys.stderr)
                return 1
            print()
            print(f"FlowPilot is up (data in {cfg.home}). Ctrl-C stops everything.")
            print(f"  API docs       {cfg.control_plane_url}/api/docs/")
            print(f"  admin          {cfg.control_plane_url}/admin/")
            print(f"  Dagster UI     {cfg.dagster_url}")
            print(f"  login          {seed.user.email} / {DEMO_PASSWORD}   API token {seed.token}")
            sys.stdout.flush()
            while all(child.poll() is None for child in children):
                time.sleep(0.5)
            print("a process exited; stopping the others", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
        finally:
            for child in children:
                processes.stop(child)


def cmd_manage(args: argparse.Namespace) -> int:
    runtime.django_setup()
    from django.core.management import execute_from_command_line

    execute_from_command_line(["flowpilot manage", *args.rest])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flowpilot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    db = sub.add_parser("db", help="manage the embedded PostgreSQL server")
    db.add_argument("action", choices=["start", "stop", "url", "status"])
    db.set_defaults(func=cmd_db)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    seed = sub.add_parser("seed", help="create the demo organization, user and workflow")
    seed.add_argument("--json", action="store_true")
    seed.set_defaults(func=cmd_seed)
    sub.add_parser("demo", help="run the demo workflow end to end").set_defaults(func=cmd_demo)
    sub.add_parser("up", help="database, control plane and Dagster").set_defaults(func=cmd_up)
    manage = sub.add_parser("manage", help="Django management commands")
    manage.add_argument("rest", nargs=argparse.REMAINDER)
    manage.set_defaults(func=cmd_manage)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
