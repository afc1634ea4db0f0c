"""The production Dagster instance (deploy/dagster.yaml) on PostgreSQL: it loads with its
credentials from DAGSTER_PG_* variables, keeps runs, events and schedules in dagster-postgres
storage, and a materialization made through it can be read back."""

import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, asset, materialize
from dagster._core.run_coordinator import QueuedRunCoordinator

from ffe_dagster.config.settings import PROJECT_DIR
from ffe_dagster.pooled_postgres_storage import (
    PooledPostgresEventLogStorage,
    PooledPostgresRunStorage,
    PooledPostgresScheduleStorage,
)


@asset(pool="warehouse")
def tiny_table() -> list[int]:
    """A stand-in for a warehouse writer: in the same pool as the real ones."""
    return [1, 2, 3]


def test_a_run_lands_in_postgres(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = sa.make_url(postgres_url)
    for name, value in {
        "DAGSTER_PG_HOST": url.host,
        "DAGSTER_PG_PORT": str(url.port),
        "DAGSTER_PG_USER": url.username,
        "DAGSTER_PG_PASSWORD": url.password,
        "DAGSTER_PG_DB": url.database,
    }.items():
        assert value is not None
        monkeypatch.setenv(name, value)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_DIR / "deploy" / "dagster.yaml", home / "dagster.yaml")

    instance = DagsterInstance.from_config(str(home))
    try:
        assert isinstance(instance.run_storage, PooledPostgresRunStorage)
        assert isinstance(instance.event_log_storage, PooledPostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PooledPostgresScheduleStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1

        result = materialize([tiny_table], instance=instance)
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        assert run is not None and run.status == DagsterRunStatus.SUCCESS
        event = instance.get_latest_materialization_event(AssetKey("tiny_table"))
        assert event is not None and event.run_id == result.run_id

        # Each storage keeps its connection: 20 reads through each open at most one more
        # (dagster-postgres's own NullPool engine would connect 20 times).
        storages = (instance.run_storage, instance.event_log_storage, instance.schedule_storage)
        connects = {type(s).__name__: 0 for s in storages}
        for storage in storages:

            def count(*_: object, name: str = type(storage).__name__) -> None:
                connects[name] += 1

            sa.event.listen(storage._engine, "connect", count)  # pyright: ignore[reportAttributeAccessIssue]
        for _ in range(20):
            assert instance.get_run_by_id(result.run_id) is not None
            assert instance.get_latest_materialization_event(AssetKey("tiny_table")) is not None
            instance.all_instigator_state()
        assert all(n <= 1 for n in connects.values()), connects
        assert _other_connections(postgres_url) >= 1  # kept while the instance lives
    finally:
        instance.dispose()
    # ... and closed with it, though the instance object is still referenced here; all but the
    # schedule storage's, which DagsterInstance.dispose leaves alone (it disposes the run and
    # event-log storages only): that one closes when the instance is collected, or disposed.
    assert _other_connections(postgres_url) <= 1
    instance.schedule_storage.dispose()
    assert _other_connections(postgres_url) == 0

    # Read straight from the database: the run really is in PostgreSQL, not in a local file.
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as con:
            run_ids = con.execute(sa.text("SELECT run_id FROM runs")).scalars().all()
    finally:
        engine.dispose()
    assert run_ids == [result.run_id]


def _other_connections(postgres_url: str) -> int:
    """Open connections to the test's database besides the one asking."""
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as con:
            query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            return int(con.execute(sa.text(query + "AND pid <> pg_backend_pid()")).scalar_one())
    finally:
        engine.dispose()
