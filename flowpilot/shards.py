"""Code-location shards: with FLOWPILOT_CODE_SHARDS=N > 1 the published workflows are split over
N Dagster code locations `flowpilot-0` .. `flowpilot-<N-1>`, one gRPC code server each, so no
single location loads (or reloads) every workflow.

An organization's shard is a stable hash of its slug (slugs never change), so all of its jobs,
schedules and trigger events live in one location, and every process agrees on it without a
database read. The platform's own maintenance jobs live in shard 0. With N = 1 there is one
location, `flowpilot`, loaded from the project's static workspace.yaml.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from flowpilot import config

ATTRIBUTE = re.compile(r"^shard_(\d+)_of_(\d+)$")


def shard_of(org_slug: str, shards: int) -> int:
    """The shard (0 .. shards-1) that holds the organization's workflows."""
    if shards <= 1:
        return 0
    digest = hashlib.sha256(org_slug.encode()).digest()
    return int.from_bytes(digest[:8], "big") % shards


def location_name(shard: int, shards: int) -> str:
    """The Dagster code location that loads `shard`: `flowpilot`, or `flowpilot-<shard>`."""
    return config.CODE_LOCATION if shards <= 1 else f"{config.CODE_LOCATION}-{shard}"


def attribute(shard: int, shards: int) -> str:
    """The attribute of `orchestration.definitions` that is the shard's repository."""
    return "defs" if shards <= 1 else f"shard_{shard}_of_{shards}"


def parse_attribute(name: str) -> tuple[int, int] | None:
    """(shard, shards) for an attribute name `shard_<i>_of_<n>` with 0 <= i < n; else None."""
    match = ATTRIBUTE.match(name)
    if not match:
        return None
    shard, shards = int(match[1]), int(match[2])
    return (shard, shards) if 0 <= shard < shards else None


def workspace(shards: int) -> dict:
    """The Dagster workspace for `shards` code locations (one python_module entry each)."""
    return {
        "load_from": [
            {
                "python_module": {
                    "module_name": "orchestration.definitions",
                    "attribute": attribute(shard, shards),
                    "location_name": location_name(shard, shards),
                    "working_directory": str(config.PROJECT_ROOT),
                }
            }
            for shard in range(max(shards, 1))
        ]
    }


def grpc_workspace(endpoints: list[int | Path], host: str = "127.0.0.1") -> dict:
    """The workspace for FlowPilot's own code servers, one per shard, at `endpoints` (in shard
    order; a TCP port on `host` or a Unix socket path): `grpc_server` entries, which Dagster
    reloads by asking the server (in place)."""
    shards = len(endpoints)
    entries = []
    for shard, endpoint in enumerate(endpoints):
        where = (
            {"socket": str(endpoint)}
            if isinstance(endpoint, Path)
            else {"host": host, "port": endpoint}
        )
        entries.append({"grpc_server": {**where, "location_name": location_name(shard, shards)}})
    return {"load_from": entries}


def grpc_workspace_file(cfg: config.Config, endpoints: list[int | Path]) -> Path:
    """`grpc_workspace` written into DAGSTER_HOME for the processes of this installation."""
    import yaml

    path = cfg.dagster_home / "workspace-code-servers.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# Written by `flowpilot up` for its code servers (flowpilot/shards.py); do not edit.\n"
        + yaml.safe_dump(grpc_workspace(endpoints), sort_keys=False)
    )
    return path


def workspace_file(cfg: config.Config) -> Path:
    """The workspace file Dagster processes of this installation load: the project's static
    workspace.yaml for one location, else one written into DAGSTER_HOME for cfg.code_shards."""
    import yaml

    if cfg.code_shards <= 1:
        return config.PROJECT_ROOT / "workspace.yaml"
    path = cfg.dagster_home / f"workspace-{cfg.code_shards}-shards.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (
        f"# Written by FlowPilot for FLOWPILOT_CODE_SHARDS={cfg.code_shards}"
        " (flowpilot/shards.py); do not edit.\n"
    ) + yaml.safe_dump(workspace(cfg.code_shards), sort_keys=False)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


if __name__ == "__main__":  # `python -m flowpilot.shards`: the workspace for a deployment
    import sys

    import yaml

    sys.stdout.write(yaml.safe_dump(workspace(config.load().code_shards), sort_keys=False))
