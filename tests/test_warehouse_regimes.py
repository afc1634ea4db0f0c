"""``WarehouseResource.replace_regimes`` on a real DuckDB file: the stored history always ends
equal to the frame given, and a cycle that adds hours of bars rewrites only those rows."""

from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

from ffe_dagster.config.settings import PACKAGE_DIR
from ffe_dagster.core.regimes.detection import RegimeConfig, detect_regimes
from ffe_dagster.resources.warehouse import WarehouseResource

BARS = pl.read_parquet(PACKAGE_DIR / "data" / "samples" / "BTC_USDT_1h.parquet").sort("ts")


def _stored_equals(warehouse: WarehouseResource, frame: pl.DataFrame) -> None:
    stored = warehouse.read_regimes("BTC_USDT")
    assert_frame_equal(stored, frame.cast(stored.schema))  # pyright: ignore[reportArgumentType]


def test_six_new_hours_rewrite_only_the_rows_that_changed(tmp_path: Path) -> None:
    warehouse = WarehouseResource(path=str(tmp_path / "w.duckdb"))
    config = RegimeConfig()
    last = BARS["ts"].max()
    assert isinstance(last, datetime)
    before = detect_regimes(BARS.filter(pl.col("ts") <= last - timedelta(hours=6)), config)
    assert warehouse.replace_regimes("BTC_USDT", before) == before.height
    _stored_equals(warehouse, before)

    after = detect_regimes(BARS, config)
    written = warehouse.replace_regimes("BTC_USDT", after)
    _stored_equals(warehouse, after)
    # the 6 new bars, and at most the last day's rows whose label the new bars changed
    assert 6 <= written <= 6 + 24
    assert written < after.height // 100
    assert warehouse.replace_regimes("BTC_USDT", after) == 0  # nothing changed: nothing written
    _stored_equals(warehouse, after)


def test_a_changed_old_bar_rewrites_from_its_first_changed_regime_row(tmp_path: Path) -> None:
    warehouse = WarehouseResource(path=str(tmp_path / "w.duckdb"))
    config = RegimeConfig()
    original = detect_regimes(BARS, config)
    warehouse.replace_regimes("BTC_USDT", original)
    # the last bar of a day in the middle: the daily close the regimes are computed from
    half = BARS.slice(BARS.height // 2)
    middle = half.filter(pl.col("ts").dt.hour() == 23)["ts"][0]
    edited = BARS.with_columns(
        close=pl.when(pl.col("ts") == middle).then(pl.col("close") * 1.5).otherwise("close")
    )
    changed = detect_regimes(edited, config)
    written = warehouse.replace_regimes("BTC_USDT", changed)
    _stored_equals(warehouse, changed)
    assert 0 < written < original.height
    # no row before the edited bar's day can change (each bar carries the previous day's regime)
    unchanged = original.filter(pl.col("ts") < middle)
    assert_frame_equal(changed.filter(pl.col("ts") < middle), unchanged)
    # a shorter history (bars removed at the end) leaves no stale rows behind
    shorter = changed.head(changed.height - 50)
    warehouse.replace_regimes("BTC_USDT", shorter)
    _stored_equals(warehouse, shorter)
