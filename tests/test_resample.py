"""Coarser bars derived from finer ones: first / max / min / last / sum, open-time labels, no
bar invented across a gap, and equality with the venue's own hourly bars."""

from datetime import timedelta

import polars as pl
import pytest

from ffe_dagster.core.data.bars import OHLCV_SCHEMA
from ffe_dagster.core.data.resample import resample_bars
from tests.fakes.harness import between, real_bars, utc

START = utc(2024, 1, 1)


def five_minute(values: list[tuple[int, float, float, float, float, float | None]]) -> pl.DataFrame:
    """Bars at START + minutes, hand-written (minute, open, high, low, close, volume)."""
    return pl.DataFrame(
        [(START + timedelta(minutes=m), *rest) for m, *rest in values],
        schema=OHLCV_SCHEMA,
        orient="row",
    )


def test_hand_worked_fifteen_minutes() -> None:
    bars = five_minute(
        [
            (0, 10, 12, 9, 11, 1.0),
            (5, 11, 15, 10, 14, 2.0),
            (10, 14, 14, 8, 9, 3.0),
            (15, 9, 10, 7, 8, 4.0),
        ]
    )
    before = bars.clone()
    out = resample_bars(bars, "15m", source_interval="5m")
    assert out.rows() == [
        (START, 10.0, 15.0, 8.0, 9.0, 6.0),
        (START + timedelta(minutes=15), 9.0, 10.0, 7.0, 8.0, 4.0),
    ]
    assert bars.equals(before)
    assert out.schema == pl.Schema(OHLCV_SCHEMA)


def test_no_bar_is_invented_across_a_gap_and_partial_buckets_keep_their_bars() -> None:
    bars = five_minute([(0, 1, 2, 1, 2, 1.0), (5, 2, 3, 2, 3, 1.0), (130, 5, 6, 5, 6, 1.0)])
    out = resample_bars(bars, "1h", source_interval="5m")
    assert out["ts"].to_list() == [START, START + timedelta(hours=2)]  # 01:00 had no bar
    assert out.row(0) == (START, 1.0, 3.0, 1.0, 3.0, 2.0)


def test_incomplete_bucket_is_left_out_when_asked() -> None:
    bars = five_minute([(m, 1, 2, 1, 2, 1.0) for m in range(0, 90, 5)])  # 00:00 .. 01:25
    out = resample_bars(
        bars, "1h", source_interval="5m", complete_before=START + timedelta(hours=1, minutes=30)
    )
    assert out["ts"].to_list() == [START]


def test_missing_volume_stays_missing() -> None:
    bars = five_minute([(0, 1, 2, 1, 2, None), (5, 2, 3, 2, 3, None), (60, 1, 1, 1, 1, 5.0)])
    out = resample_bars(bars, "1h", source_interval="5m")
    assert out["volume"].to_list() == [None, 5.0]


def test_same_interval_is_a_copy_and_finer_or_odd_targets_are_refused() -> None:
    bars = five_minute([(0, 1, 2, 1, 2, 1.0)])
    assert resample_bars(bars, "5m", source_interval="5m").equals(bars)
    with pytest.raises(ValueError, match="whole multiple"):
        resample_bars(bars, "1m", source_interval="5m")
    with pytest.raises(ValueError, match="whole multiple"):
        resample_bars(bars, "7m", source_interval="5m")


def test_real_five_minute_bars_resample_to_the_venues_own_hourly_bars() -> None:
    start, end = utc(2022, 6, 1), utc(2022, 6, 15)
    hourly = resample_bars(
        between(real_bars("BTC_USDT_5m"), start, end), "1h", source_interval="5m"
    )
    binance = between(real_bars("BTC_USDT_1h"), start, end)
    assert hourly.height == binance.height == 14 * 24
    assert hourly.select("ts", "open", "high", "low", "close").equals(
        binance.select("ts", "open", "high", "low", "close")
    )
    relative = (hourly["volume"] - binance["volume"]).abs() / binance["volume"]
    assert relative.max() < 1e-9  # type: ignore[operator]
