"""Dagster's PostgreSQL storages (dagster-postgres), with two costs taken out of every call.

Profiled under load (py-spy on `dagster dev` at 3 webhook runs a second, bench/throughput.py),
the daemon spent 36% of its CPU opening PostgreSQL connections and 20% on schema reflection, and
the webserver 18% on reflection:

- dagster-postgres storages use SQLAlchemy's NullPool: a new connection for every storage call,
  in every process but the webserver (which pools through `optimize_for_webserver`). Here each
  storage pools from the start, with the webserver's settings and no statement timeout. Pooled
  connections are not shared across a fork: a forked child (the warm run launcher's workers)
  discards what it inherited (SQLAlchemy's `dispose(close=False)`) and opens its own.
- Storage calls check the schema before they run (`has_run_stats_index_cols` reflects the
  `runs` columns on every run event; `has_instigators_table` / `has_secondary_index_table` list
  every table on every sensor tick). Here a check that found the column or table is
  remembered: Dagster's migrations only ever add them. A check that found nothing is asked
  again next time, so a migration applied while the process runs is still seen.

Configured in dagster.yaml as `run_storage`, `event_log_storage` and `schedule_storage`.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

POOL_MAX_OVERFLOW = 8  # connections beyond the one held, for concurrent threads
POOL_RECYCLE_SECONDS = 3600


def _pool(storage: Any) -> None:
    """Pool the storage's connections (as the webserver does) and make the pool fork-safe."""
    storage.optimize_for_webserver(
        statement_timeout=0, pool_recycle=POOL_RECYCLE_SECONDS, max_overflow=POOL_MAX_OVERFLOW
    )
    reference = weakref.ref(storage)

    def discard_inherited_connections() -> None:
        if (alive := reference()) is not None:
            alive._engine.dispose(close=False)

    os.register_at_fork(after_in_child=discard_inherited_connections)


def _remember(storage: Any, name: str, check: Any) -> bool:
    """`check()` once it has answered True; asked again while it answers False."""
    remembered = storage.__dict__.setdefault("_flowpilot_schema", set())
    if name in remembered:
        return True
    found = bool(check())
    if found:
        remembered.add(name)
    return found


class _Pooled:
    """Mixed in before a dagster-postgres storage: pooled from the start, and built from config
    as this class (dagster-postgres's `from_config_value` names its own class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _pool(self)

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> Any:
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )


class FlowPilotRunStorage(_Pooled, PostgresRunStorage):
    def has_run_stats_index_cols(self) -> bool:
        return _remember(self, "run_stats_cols", super().has_run_stats_index_cols)

    def has_bulk_actions_selector_cols(self) -> bool:
        return _remember(self, "bulk_actions_cols", super().has_bulk_actions_selector_cols)

    def has_backfill_id_column(self) -> bool:
        return _remember(self, "backfill_id_col", super().has_backfill_id_column)


class FlowPilotEventLogStorage(_Pooled, PostgresEventLogStorage):
    pass


class FlowPilotScheduleStorage(_Pooled, PostgresScheduleStorage):
    def has_instigators_table(self) -> bool:
        return _remember(self, "instigators", super().has_instigators_table)

    def _has_instigators_table(self, conn: Any) -> bool:
        check = super()._has_instigators_table
        return _remember(self, "instigators", lambda: check(conn))

    def has_secondary_index_table(self) -> bool:
        return _remember(self, "secondary_indexes", super().has_secondary_index_table)

    def has_built_index(self, migration_name: str) -> bool:
        check = super().has_built_index
        return _remember(self, f"index:{migration_name}", lambda: check(migration_name))


def storage_config(postgres_url: str | dict) -> dict[str, Any]:
    """The instance-config blocks for these storages (what dagster.yaml holds), for instances
    configured in code (tests, benchmarks)."""
    config = {"postgres_url": postgres_url}
    return {
        f"{kind}_storage": {"module": __name__, "class": cls.__name__, "config": config}
        for kind, cls in (
            ("run", FlowPilotRunStorage),
            ("event_log", FlowPilotEventLogStorage),
            ("schedule", FlowPilotScheduleStorage),
        )
    }
