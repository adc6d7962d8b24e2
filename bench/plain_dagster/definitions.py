"""The plain Dagster project (`dagster dev -f bench/plain_dagster/definitions.py`).

- `trivial_job`: three ops in a chain, each doing trivial work, on the in-process executor (as
  FlowPilot's rendered jobs are: without it every op would start a process of its own).
- `new_rows_sensor`: Dagster's default sensor interval (`minimum_interval_seconds` left at 30);
  each tick reads the rows of `bench_trigger` past its cursor and requests one run per row
  (`run_key` and the `bench/row` tag = the row id). It is on by default so that nobody has to
  switch it on in the UI; nothing else differs from a sensor's defaults.

Environment: `PLAIN_TRIGGER_DB_URL`, a libpq URL of the database holding `bench_trigger`."""

from __future__ import annotations

import os

from dagster import (
    DefaultSensorStatus,
    Definitions,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    in_process_executor,
    job,
    op,
    sensor,
)

TRIGGER_TABLE = "bench_trigger"
ROW_TAG = "bench/row"


@op
def first() -> int:
    return 1


@op
def second(value: int) -> int:
    return value + 1


@op
def third(value: int) -> int:
    return value * 2


@job(executor_def=in_process_executor)
def trivial_job() -> None:
    third(second(first()))


@sensor(job=trivial_job, default_status=DefaultSensorStatus.RUNNING)
def new_rows_sensor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
    import psycopg

    cursor = int(context.cursor or 0)
    with psycopg.connect(os.environ["PLAIN_TRIGGER_DB_URL"]) as conn:
        rows = conn.execute(
            f"SELECT id FROM {TRIGGER_TABLE} WHERE id > %s ORDER BY id", [cursor]
        ).fetchall()
    if not rows:
        return SkipReason("no new rows")
    return SensorResult(
        run_requests=[RunRequest(run_key=str(row), tags={ROW_TAG: str(row)}) for (row,) in rows],
        cursor=str(rows[-1][0]),
    )


defs = Definitions(jobs=[trivial_job], sensors=[new_rows_sensor])
