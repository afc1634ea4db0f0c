"""The embedded instance's event log (dagster.yaml -> ``BatchedSqliteEventLogStorage``): a
single-run backfill stores exactly what Dagster's own SQLite event log stores, in far fewer
transactions. Real Dagster instances on SQLite files under ``tmp_path``."""

import shutil
import sqlite3
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    BetaWarning,
    DagsterInstance,
    Definitions,
    MaterializeResult,
    StaticPartitionsDefinition,
    asset,
    define_asset_job,
)
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from ffe_dagster.config.settings import PROJECT_DIR
from ffe_dagster.instance_storage import (
    EVENT_BATCH_ENV,
    EVENT_BATCH_SIZE,
    BatchedSqliteEventLogStorage,
)

KEYS = [f"p{i:03d}" for i in range(60)]
PARTITIONS = StaticPartitionsDefinition(KEYS)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", BetaWarning)  # backfill_policy is beta, as in ingestion.py
    upstream_asset = asset(partitions_def=PARTITIONS, backfill_policy=BackfillPolicy.single_run())
    downstream_asset = asset(
        deps=["upstream"],
        partitions_def=PARTITIONS,
        backfill_policy=BackfillPolicy.single_run(),
        check_specs=[AssetCheckSpec("fine", asset="downstream", blocking=True)],
    )


@upstream_asset
def upstream(context: AssetExecutionContext) -> MaterializeResult:
    """Sixty partitions in one run, tagged metadata, as ``raw_bars`` is."""
    return MaterializeResult(metadata={"partitions": len(context.partition_keys)})


@downstream_asset
def downstream(context: AssetExecutionContext) -> Iterator[MaterializeResult | AssetCheckResult]:
    """The partitions again, with a blocking check, as ``validated_bars`` is."""
    yield MaterializeResult(metadata={"partitions": len(context.partition_keys)})
    yield AssetCheckResult(check_name="fine", passed=True)


DEFS = Definitions(
    assets=[upstream, downstream], jobs=[define_asset_job("both", [upstream, downstream])]
)


def _run(home: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[DagsterInstance, int, str]:
    """One single-run backfill of every partition in the instance at ``home``; the instance,
    the number of database connections its event log opened, and the run id."""
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    opened = Counter[str]()
    storage = instance.event_log_storage
    assert isinstance(storage, SqliteEventLogStorage)
    connect = storage._connect

    def counting(shard: str):  # a spy on Dagster's own connection factory, not a replacement
        opened["n"] += 1
        return connect(shard)

    monkeypatch.setattr(storage, "_connect", counting)
    result = DEFS.resolve_job_def("both").execute_in_process(
        instance=instance,
        tags={ASSET_PARTITION_RANGE_START_TAG: KEYS[0], ASSET_PARTITION_RANGE_END_TAG: KEYS[-1]},
    )
    assert result.success
    return instance, opened["n"], result.run_id


def _stored(home: Path, run_id: str) -> dict[str, list[Any]]:
    """What the SQLite files hold, independent of Dagster's reading code."""
    shard = sqlite3.connect(home / "history" / "runs" / f"{run_id}.db")
    index = sqlite3.connect(home / "history" / "runs" / "index.db")
    by_type = "SELECT dagster_event_type, count(*) FROM event_logs GROUP BY 1 ORDER BY 1"
    out = {
        "run": shard.execute(by_type).fetchall(),
        "index": index.execute(by_type).fetchall(),
        "tags": index.execute("SELECT count(*) FROM asset_event_tags").fetchall(),
        "assets": index.execute(
            "SELECT asset_key, last_materialization_timestamp IS NOT NULL FROM asset_keys "
            "ORDER BY 1"
        ).fetchall(),
        "partitions": index.execute(
            "SELECT asset_key, count(DISTINCT partition) FROM event_logs "
            "WHERE dagster_event_type = 'ASSET_MATERIALIZATION' GROUP BY 1 ORDER BY 1"
        ).fetchall(),
    }
    shard.close()
    index.close()
    return out


def test_a_backfill_stores_the_same_events_in_fewer_transactions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(EVENT_BATCH_ENV, EVENT_BATCH_SIZE)
    ours, default = tmp_path / "ours", tmp_path / "default"
    ours.mkdir()
    default.mkdir()
    shutil.copy(PROJECT_DIR / "dagster.yaml", ours / "dagster.yaml")
    (default / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")

    mine, mine_opened, mine_run = _run(ours, monkeypatch)
    theirs, theirs_opened, theirs_run = _run(default, monkeypatch)

    assert isinstance(mine.event_log_storage, BatchedSqliteEventLogStorage)
    assert not isinstance(theirs.event_log_storage, BatchedSqliteEventLogStorage)
    stored = _stored(ours, mine_run)
    assert stored == _stored(default, theirs_run)
    # 2 assets x 60 partitions, planned and materialized, each in the run and the index shard.
    assert ("ASSET_MATERIALIZATION", 120) in stored["index"]
    assert ("ASSET_MATERIALIZATION_PLANNED", 120) in stored["index"]
    assert stored["partitions"] == [('["downstream"]', 60), ('["upstream"]', 60)]
    for instance in (mine, theirs):
        assert instance.get_materialized_partitions(AssetKey("downstream")) == set(KEYS)
        check = AssetCheckKey(AssetKey("downstream"), "fine")
        latest = instance.event_log_storage.get_latest_asset_check_execution_by_key([check])
        assert latest[check].status == AssetCheckExecutionRecordStatus.SUCCEEDED
    # Dagster's own storage opens two connections per asset event (run and index shard).
    assert theirs_opened >= 2 * 240
    assert mine_opened < 60
    mine.dispose()
    theirs.dispose()


def test_without_batching_every_event_is_stored_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(EVENT_BATCH_ENV, raising=False)
    shutil.copy(PROJECT_DIR / "dagster.yaml", tmp_path / "dagster.yaml")
    instance, opened, run_id = _run(tmp_path, monkeypatch)
    assert instance.get_materialized_partitions(AssetKey("upstream")) == set(KEYS)
    assert ("ASSET_MATERIALIZATION", 120) in _stored(tmp_path, run_id)["index"]
    assert opened >= 2 * 240
    instance.dispose()
