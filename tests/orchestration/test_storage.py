"""FlowPilot's Dagster storages (orchestration/storage.py) on the real PostgreSQL: connections
are pooled (one connection for many calls), pooled connections are not shared across a fork,
and schema checks are asked once they have found what they look for."""

from __future__ import annotations

import os

import pytest
from dagster import DagsterInstance
from dagster._core.test_utils import create_run_for_test, instance_for_test
from sqlalchemy import event

from orchestration.storage import (
    FlowPilotEventLogStorage,
    FlowPilotRunStorage,
    FlowPilotScheduleStorage,
    _remember,
    storage_config,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def instance(dagster_storage_url):
    with instance_for_test(overrides=storage_config(dagster_storage_url)) as instance:
        yield instance


def count(engine, name: str) -> list:
    """A list that grows by one on each engine event `name` (connect, before_cursor_execute)."""
    seen: list = []
    event.listen(engine, name, lambda *args, **kwargs: seen.append(args[2] if len(args) > 2 else 1))
    return seen


def test_the_instance_uses_flowpilots_storages(instance: DagsterInstance):
    assert isinstance(instance.run_storage, FlowPilotRunStorage)
    assert isinstance(instance.event_log_storage, FlowPilotEventLogStorage)
    assert isinstance(instance.schedule_storage, FlowPilotScheduleStorage)


def test_many_calls_share_one_pooled_connection(instance: DagsterInstance):
    storage = instance.run_storage
    connects = count(storage._engine, "connect")
    for _ in range(20):
        create_run_for_test(instance, job_name="pooled")
        instance.get_runs(limit=5)
    assert len(connects) == 1  # NullPool (dagster-postgres' default) would connect 60+ times


def test_schema_checks_are_asked_once_found(instance: DagsterInstance):
    runs, schedules = instance.run_storage, instance.schedule_storage
    statements = count(runs._engine, "before_cursor_execute")
    schedule_statements = count(schedules._engine, "before_cursor_execute")
    for _ in range(5):
        assert runs.has_run_stats_index_cols()
        assert schedules.has_instigators_table()
        assert schedules.has_secondary_index_table()
    catalog = [s for s in statements + schedule_statements if "pg_catalog" in str(s)]
    assert len(catalog) == 3  # each check reflected once, then remembered (dagster-postgres: 15)

    # A check that found nothing is asked again: a migration may add it while we run.
    answers = iter([False, True, True])
    asked = []

    def check() -> bool:
        asked.append(1)
        return next(answers)

    assert [_remember(runs, "later", check) for _ in range(4)] == [False, True, True, True]
    assert len(asked) == 2


def test_a_forked_child_opens_its_own_connection(instance: DagsterInstance):
    storage = instance.run_storage
    create_run_for_test(instance, job_name="before_fork")  # the parent holds a pooled connection
    parent_backend = storage._engine.pool.status()
    pid = os.fork()
    if pid == 0:  # the child: the inherited pool was discarded, so it connects anew
        code = 1
        try:
            connects = count(storage._engine, "connect")
            names = {run.job_name for run in instance.get_runs()}
            code = 0 if connects and "before_fork" in names else 2
        finally:
            os._exit(code)
    _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's own connection still works after the child has gone.
    assert storage._engine.pool.status() == parent_backend
    assert {run.job_name for run in instance.get_runs()} >= {"before_fork"}
