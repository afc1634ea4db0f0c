"""A cycle ingests only what changed: closed partitions whose bars and rules are as they were
at their last passing validation are not requested again; a changed bar, a failed check, an
unfinished backfill or the open window is. Real DuckDB, real Dagster instance, the real
bundled bars (copied, so a test may edit them as a user would)."""

import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
import yaml
from dagster import AssetKey, DagsterInstance, materialize
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from ffe_dagster.assets.ingestion import build_ingestion_assets
from ffe_dagster.cli import cycle_steps
from ffe_dagster.config import load_universe
from ffe_dagster.config.settings import PACKAGE_DIR, Settings
from ffe_dagster.definitions import build_definitions
from ffe_dagster.ingest_plan import plan_ingest
from ffe_dagster.partitions import bar_partitions
from ffe_dagster.resources.market_data import MarketDataResource, market_data_resource
from ffe_dagster.resources.warehouse import WarehouseResource

SAMPLES = PACKAGE_DIR / "data" / "samples"
NOW = datetime(2026, 1, 1, tzinfo=UTC)  # long after the closed history below
INSTRUMENTS = ("BTC_USDT", "EUR_USD")


def _universe(folder: Path, start: str, end: str | None) -> Path:
    raw = yaml.safe_load((PACKAGE_DIR / "config" / "universe.yaml").read_text())
    raw["history_start"], raw["history_end"] = start, end
    raw["instruments"] = [i for i in raw["instruments"] if i["key"] in INSTRUMENTS]
    path = folder / "universe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def cycle(tmp_path: Path) -> Iterator[tuple[Settings, DagsterInstance]]:
    """Settings over four closed months (2024-03 .. 2024-06) of two instruments, read from a
    copy of the bundled files, and a Dagster instance."""
    samples = tmp_path / "samples"
    shutil.copytree(SAMPLES, samples)
    settings = Settings.from_env(
        {
            "FFE_VAR_DIR": str(tmp_path / "var"),
            "FFE_SAMPLES_DIR": str(samples),
            "FFE_UNIVERSE": str(_universe(tmp_path, "2024-03-01", "2024-06-30")),
            "FFE_TRIAL_PROFILE": "quick",
        }
    )
    with DagsterInstance.ephemeral() as instance:
        yield settings, instance


def _ingest(
    settings: Settings, instance: DagsterInstance, *, everything: bool = False
) -> dict[str, dict]:
    """The cycle's steps as the CLI plans them, with its ingest and regimes runs executed."""
    steps = cycle_steps(settings, instance, NOW, everything=everything)
    defs = build_definitions(settings)
    for job in ("ingest_job", "regimes_job"):
        if job in steps:
            defs.resolve_job_def(job).execute_in_process(instance=instance, tags=steps[job])
    return steps


def _states(settings: Settings, instrument: str) -> dict[datetime, str | None]:
    warehouse = WarehouseResource(path=str(settings.warehouse_path))
    frame = warehouse.read_table(
        "SELECT window_start, run_id FROM partition_state WHERE instrument = ?", [instrument]
    )
    return dict(zip(frame["window_start"].to_list(), frame["run_id"].to_list(), strict=True))


def _edit(settings: Settings, instrument: str, ts: datetime, **values: float) -> None:
    path = settings.samples_dir / f"{instrument}_1h.parquet"
    bars = pl.read_parquet(path)
    hit = pl.col("ts") == ts
    assert bars.filter(hit).height == 1
    bars.with_columns(
        **{k: pl.when(hit).then(pl.lit(v)).otherwise(pl.col(k)) for k, v in values.items()}
    ).write_parquet(path)


def test_a_second_cycle_requests_no_closed_unchanged_partition(
    cycle: tuple[Settings, DagsterInstance],
) -> None:
    settings, instance = cycle
    first = _ingest(settings, instance)
    assert first["ingest_job"][ASSET_PARTITION_RANGE_START_TAG] == "2024-03-01|BTC_USDT"
    assert first["ingest_job"][ASSET_PARTITION_RANGE_END_TAG] == "2024-06-01|EUR_USD"
    assert set(_states(settings, "BTC_USDT")) == {
        datetime(2024, m, 1, tzinfo=UTC) for m in (3, 4, 5, 6)
    }
    runs = len(instance.get_runs())

    again = _ingest(settings, instance)
    # No ingest run and, with the bars unchanged and regimes materialized, no regimes run.
    assert list(again) == ["optimization_job"]
    assert len(instance.get_runs()) == runs
    plan = plan_ingest(
        load_universe(settings.universe_path),
        WarehouseResource(path=str(settings.warehouse_path)),
        market_data_resource(load_universe(settings.universe_path), settings.samples_dir),
        materialized=instance.get_materialized_partitions(AssetKey("validated_bars")),
        now=NOW,
    )
    assert (plan.first_window, plan.unchanged, plan.partitions) == (None, 8, 8)
    assert "all 8 bar partitions unchanged" in plan.describe()


def test_a_changed_bar_in_a_closed_month_is_validated_again(
    cycle: tuple[Settings, DagsterInstance],
) -> None:
    settings, instance = cycle
    _ingest(settings, instance)
    before = _states(settings, "EUR_USD")
    # A user corrects a file: one April bar becomes impossible (high below low).
    bad = datetime(2024, 4, 10, 12, tzinfo=UTC)
    _edit(settings, "BTC_USDT", bad, high=1.0)

    steps = _ingest(settings, instance)
    # From the changed month on (validation reads the bar before each window), every
    # instrument of those windows: one range of one run.
    assert steps["ingest_job"][ASSET_PARTITION_RANGE_START_TAG] == "2024-04-01|BTC_USDT"
    assert steps["ingest_job"][ASSET_PARTITION_RANGE_END_TAG] == "2024-06-01|EUR_USD"
    warehouse = WarehouseResource(path=str(settings.warehouse_path))
    raw = warehouse.read_bars("raw_bars", "BTC_USDT", bad, bad.replace(hour=13))
    assert raw["high"].to_list() == [1.0]  # fetched again
    quarantined = warehouse.read_table(
        "SELECT ts, rule FROM bars_quarantine WHERE instrument = 'BTC_USDT'"
    )
    assert quarantined["ts"].unique().to_list() == [bad]  # validated again: the suite caught it
    valid = warehouse.read_bars("validated_bars", "BTC_USDT", bad, bad.replace(hour=13))
    assert valid.height == 0
    after = _states(settings, "BTC_USDT")
    march = datetime(2024, 3, 1, tzinfo=UTC)
    assert after[march] == before[march] == _states(settings, "EUR_USD")[march]  # untouched
    assert after[datetime(2024, 4, 1, tzinfo=UTC)] != before[datetime(2024, 4, 1, tzinfo=UTC)]
    # Once validated on the new bars, nothing is due again.
    assert "ingest_job" not in _ingest(settings, instance)


def test_a_partition_failing_a_blocking_check_stays_due(
    cycle: tuple[Settings, DagsterInstance],
) -> None:
    settings, instance = cycle
    _ingest(settings, instance)
    # 2 % of May's EUR_USD bars broken: more than the 1 % the quarantine check allows.
    bars = pl.read_parquet(settings.samples_dir / "EUR_USD_1h.parquet")
    may = bars.filter(pl.col("ts").dt.month() == 5, pl.col("ts").dt.year() == 2024)
    for ts in may["ts"].gather_every(40).to_list():
        _edit(settings, "EUR_USD", ts, low=-1.0)
    steps = cycle_steps(settings, instance, NOW)
    assert steps["ingest_job"][ASSET_PARTITION_RANGE_START_TAG] == "2024-05-01|BTC_USDT"
    result = (
        build_definitions(settings)
        .resolve_job_def("ingest_job")
        .execute_in_process(instance=instance, tags=steps["ingest_job"], raise_on_error=False)
    )
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["quarantine_rate_within_limit"] is False
    assert datetime(2024, 5, 1, tzinfo=UTC) not in _states(settings, "EUR_USD")
    again = cycle_steps(settings, instance, NOW)  # the failure is not forgotten
    assert again["ingest_job"][ASSET_PARTITION_RANGE_START_TAG] == "2024-05-01|BTC_USDT"


def test_an_unfinished_backfill_resumes_at_the_first_window_it_did_not_validate(
    cycle: tuple[Settings, DagsterInstance],
) -> None:
    settings, instance = cycle
    universe = load_universe(settings.universe_path)
    warehouse = WarehouseResource(path=str(settings.warehouse_path))
    # The backfill got through March and April of both instruments, then died.
    materialize(
        build_ingestion_assets(universe, bar_partitions(universe)),
        instance=instance,
        resources={
            "warehouse": warehouse,
            "market_data": market_data_resource(universe, settings.samples_dir),
        },
        tags={
            ASSET_PARTITION_RANGE_START_TAG: "2024-03-01|BTC_USDT",
            ASSET_PARTITION_RANGE_END_TAG: "2024-04-01|EUR_USD",
        },
    )
    steps = _ingest(settings, instance)
    assert steps["ingest_job"][ASSET_PARTITION_RANGE_START_TAG] == "2024-05-01|BTC_USDT"
    assert steps["ingest_job"][ASSET_PARTITION_RANGE_END_TAG] == "2024-06-01|EUR_USD"
    for key in INSTRUMENTS:
        stored = warehouse.read_bars("raw_bars", key)
        source = pl.read_parquet(settings.samples_dir / f"{key}_1h.parquet")
        expected = source.filter(
            pl.col("ts") >= datetime(2024, 3, 1, tzinfo=UTC),
            pl.col("ts") < datetime(2024, 7, 1, tzinfo=UTC),
        )
        assert stored.height == expected.height > 2_000
        assert stored["ts"].equals(expected["ts"].cast(stored["ts"].dtype))


def test_ingesting_everything_again_changes_no_row(
    cycle: tuple[Settings, DagsterInstance],
) -> None:
    settings, instance = cycle
    _ingest(settings, instance)
    warehouse = WarehouseResource(path=str(settings.warehouse_path))
    tables = ("raw_bars", "validated_bars", "validated_bars_by_interval", "ingest_progress")
    counts = {t: warehouse.count(t) for t in tables}
    bars = warehouse.read_bars("validated_bars", "EUR_USD")
    steps = _ingest(settings, instance, everything=True)
    assert steps["ingest_job"][ASSET_PARTITION_RANGE_START_TAG] == "2024-03-01|BTC_USDT"
    assert {t: warehouse.count(t) for t in tables} == counts
    assert warehouse.read_bars("validated_bars", "EUR_USD").equals(bars)
    assert counts["raw_bars"] == 4_993  # 2,928 BTC_USDT + 2,065 EUR_USD hourly bars


def test_the_open_window_is_refreshed_every_cycle(tmp_path: Path) -> None:
    """With an open-ended history the newest window is due at every cycle; the closed one
    before it only until it has passed validation once."""
    universe = load_universe(_universe(tmp_path, "2024-05-01", None))
    warehouse = WarehouseResource(path=str(tmp_path / "warehouse.duckdb"))
    now = datetime(2024, 6, 15, 12, 30, tzinfo=UTC)
    market = MarketDataResource(
        directory=str(SAMPLES), files=dict(universe.files), as_of=now.isoformat()
    )
    with DagsterInstance.ephemeral() as instance:

        def plan():
            return plan_ingest(
                universe,
                warehouse,
                market,
                materialized=instance.get_materialized_partitions(AssetKey("validated_bars")),
                now=now,
            )

        first = plan()
        assert (first.first_window, first.last_window) == ("2024-05-01", "2024-06-01")
        result = materialize(
            build_ingestion_assets(universe, bar_partitions(universe)),
            instance=instance,
            resources={"warehouse": warehouse, "market_data": market},
            tags={
                ASSET_PARTITION_RANGE_START_TAG: "2024-05-01|BTC_USDT",
                ASSET_PARTITION_RANGE_END_TAG: "2024-06-01|EUR_USD",
            },
        )
        assert result.success
        second = plan()
        assert (second.first_window, second.last_window) == ("2024-06-01", "2024-06-01")
        assert {p.reasons[p.stale[0]] for p in second.instruments} == {
            "open window (refreshed every cycle)"
        }
        assert second.unchanged == 2
        newest = warehouse.last_bar("raw_bars", "BTC_USDT")
        assert newest is not None and newest[0] == datetime(2024, 6, 15, 12, tzinfo=UTC)
        assert date(2024, 6, 1) not in {s.date() for s in warehouse.partition_states("BTC_USDT")}


def test_regimes_older_than_the_bars_are_computed_again(
    cycle: tuple[Settings, DagsterInstance],
) -> None:
    settings, instance = cycle
    _ingest(settings, instance)
    assert list(cycle_steps(settings, instance, NOW)) == ["optimization_job"]
    # Bars ingested again (a run from the UI, or a cycle whose regimes run then failed):
    # nothing is due for ingest, but the regimes are older than the bars.
    steps = cycle_steps(settings, instance, NOW, everything=True)
    build_definitions(settings).resolve_job_def("ingest_job").execute_in_process(
        instance=instance, tags=steps["ingest_job"]
    )
    assert list(cycle_steps(settings, instance, NOW)) == ["regimes_job", "optimization_job"]
