"""The rest of docs/spec.md §2: market schedules, bar spacing, staleness, column types and a
window's context (the previous bar), on hand-built bars and on the bundled real series."""

from datetime import timedelta

import polars as pl
import pytest

from ffe_dagster.core.data.bars import OHLCV_SCHEMA, MarketKind, MarketSchedule, find_gaps
from ffe_dagster.core.data.validation import staleness_of, validate_bars
from ffe_dagster.core.data.validation_rules import (
    FRESHNESS_RULE,
    SCHEMA_RULE,
    SPACING_RULE,
    ValidationConfig,
)
from tests.fakes.harness import real_bars, utc

FOREX = MarketSchedule.for_market(MarketKind.FOREX)
CRYPTO = MarketSchedule.for_market(MarketKind.CRYPTO)
HOUR = timedelta(hours=1)


def hourly(start_hour: int, n: int, skip: tuple[int, ...] = ()) -> pl.DataFrame:
    """``n`` clean hourly bars from 2024-03-04 (a Monday) ``start_hour`` on, minus ``skip``."""
    start = utc(2024, 3, 4) + start_hour * HOUR
    rows = [
        (start + i * HOUR, 100.0 + i, 101.5 + i, 99.0 + i, 100.5 + i, 10.0)
        for i in range(n)
        if i not in skip
    ]
    return pl.DataFrame(rows, schema=OHLCV_SCHEMA, orient="row")


def test_forex_schedule_closes_for_the_weekend_and_the_holidays() -> None:
    friday = utc(2024, 3, 8)
    assert FOREX.is_open(friday + 21 * HOUR + timedelta(minutes=59))
    assert not FOREX.is_open(friday + 22 * HOUR)
    assert not FOREX.is_open(utc(2024, 3, 10, 21, 59))
    assert FOREX.is_open(utc(2024, 3, 10, 22))
    assert not FOREX.is_open(utc(2024, 12, 25, 12))  # Christmas Day (a Wednesday)
    assert FOREX.is_open(utc(2024, 12, 25, 22))
    assert FOREX.open_time(friday, friday + timedelta(days=3)) == timedelta(hours=22 + 2)
    assert CRYPTO.is_open(friday + 23 * HOUR) and CRYPTO.always_open
    assert CRYPTO.open_time(friday, friday + timedelta(days=3)) == timedelta(days=3)


def test_gaps_count_only_open_market_time() -> None:
    weekend = pl.Series([utc(2024, 3, 8, 21), utc(2024, 3, 10, 22)])
    gap = find_gaps(weekend, HOUR, FOREX).row(0, named=True)
    assert (gap["missing_bars"], gap["open_missing_bars"]) == (48, 0)
    crypto_gap = find_gaps(weekend, HOUR, CRYPTO).row(0, named=True)
    assert crypto_gap["open_missing_bars"] == 48
    # window edges: before the first bar and after the last one
    edges = find_gaps(
        pl.Series([utc(2024, 3, 4, 2), utc(2024, 3, 4, 3)]),
        HOUR,
        CRYPTO,
        window=(utc(2024, 3, 4), utc(2024, 3, 4, 6)),
    )
    assert edges.select("gap_start", "gap_end", "missing_bars").rows() == [
        (utc(2024, 3, 4), utc(2024, 3, 4, 2), 2),
        (utc(2024, 3, 4, 4), utc(2024, 3, 4, 6), 2),
    ]
    # the previous stored bar, not the window start, is the reference when given
    assert find_gaps(
        pl.Series([utc(2024, 3, 4)]), HOUR, CRYPTO, previous_ts=utc(2024, 3, 3, 23)
    ).is_empty()


def test_real_forex_and_crypto_history_have_no_oversized_open_gap() -> None:
    eur = real_bars("EUR_USD_1h")
    result = validate_bars(
        eur,
        ValidationConfig(require_volume=False, interval="1h", market=MarketKind.FOREX),
        window=(utc(2020, 1, 1), utc(2024, 7, 1)),
    )
    assert result.spacing_ok and result.suite_success_on_valid
    # weekends and holidays, and the hours before the first bar (2020-01-01 23:00): all are
    # explained by the schedule or tiny
    assert result.gaps.height == 237
    assert result.gaps["open_missing_bars"].max() == 3  # Friday 21:00 in summer + Sunday evening
    as_crypto = validate_bars(
        eur, ValidationConfig(require_volume=False, interval="1h", market=MarketKind.CRYPTO)
    )
    assert not as_crypto.spacing_ok  # the same holes are gaps on a market that never closes
    assert any("min missing while the market was open" in r for _, r in as_crypto.findings)


def test_a_lost_page_is_an_oversized_gap_with_a_reason() -> None:
    bars = real_bars("BTC_USDT_5m").filter(pl.col("ts") < utc(2022, 1, 3))
    lost = bars.filter((pl.col("ts") < utc(2022, 1, 1, 6)) | (pl.col("ts") >= utc(2022, 1, 2)))
    result = validate_bars(lost, ValidationConfig(interval="5m"))
    assert not result.spacing_ok
    assert result.findings == (
        (
            SPACING_RULE,
            "gap 2022-01-01 06:00 .. 2022-01-02 00:00 UTC (216 bars): 1080.0 min missing while "
            "the market was open > 360.0 min allowed",
        ),
    )
    assert result.quarantine.height == 0  # a gap quarantines nothing
    assert result.suite_success_on_valid


@pytest.mark.parametrize(
    ("market", "newest", "now", "fresh"),
    [
        (MarketKind.CRYPTO, utc(2024, 3, 4, 11, 50), utc(2024, 3, 4, 12, 4), True),
        (MarketKind.CRYPTO, utc(2024, 3, 4, 11, 45), utc(2024, 3, 4, 12, 1), False),
        (MarketKind.FOREX, utc(2024, 3, 8, 21, 55), utc(2024, 3, 10, 22, 30), True),  # weekend
        (MarketKind.FOREX, utc(2024, 3, 8, 21, 55), utc(2024, 3, 11, 1), False),  # Monday
        (MarketKind.FOREX, utc(2024, 3, 8, 12), utc(2024, 3, 9, 12), True),  # Sat, < 72 h
        (MarketKind.FOREX, utc(2024, 3, 6, 12), utc(2024, 3, 9, 13), False),  # Sat, > 72 h
    ],
)
def test_staleness_follows_the_market_schedule(
    market: MarketKind, newest: object, now: object, fresh: bool
) -> None:
    config = ValidationConfig(interval="5m", market=market)
    staleness = staleness_of(newest, now, config)  # type: ignore[arg-type]
    assert staleness.fresh is fresh


def test_stale_series_fails_the_freshness_rule_with_its_reason() -> None:
    bars = hourly(0, 10)
    config = ValidationConfig(interval="1h")
    result = validate_bars(bars, config, now=utc(2024, 3, 4, 14))
    assert not result.fresh_ok
    assert result.findings == (
        (
            FRESHNESS_RULE,
            "newest bar 2024-03-04 09:00 UTC at 2024-03-04 14:00 UTC (wall time) is 300.0 min "
            "old > 125.0 min allowed",
        ),
    )
    assert validate_bars(bars, config, now=utc(2024, 3, 4, 11)).fresh_ok
    nothing = validate_bars(
        bars.clear(), config, window=(utc(2024, 3, 4), utc(2024, 3, 5)), now=utc(2024, 3, 4, 3)
    )
    assert not nothing.fresh_ok and "no bar at all" in nothing.findings[-1][1]


def test_column_types_are_checked_as_received() -> None:
    naive = hourly(0, 3).with_columns(pl.col("ts").dt.replace_time_zone(None))
    result = validate_bars(naive, ValidationConfig())
    assert not result.suite_success_on_valid
    assert result.findings[0][0] == SCHEMA_RULE
    assert "column ts has type Datetime(time_unit='us', time_zone=None)" in result.findings[0][1]
    assert result.valid.height == 3  # read as UTC; the failed rule blocks, nothing is dropped


def test_previous_bar_is_the_reference_of_a_window() -> None:
    # A spike in a window's first bar is only recognisable against the bar before the window.
    spike = pl.DataFrame(
        [(utc(2024, 3, 4), 990.0, 1010.0, 985.0, 1000.0, 10.0)], schema=OHLCV_SCHEMA, orient="row"
    )
    bars = pl.concat([spike, hourly(1, 3)])
    previous = (utc(2024, 3, 3, 23), 100.0)
    result = validate_bars(bars, ValidationConfig(interval="1h"), previous_bar=previous)
    assert result.quarantine.select("ts", "rule").rows() == [(utc(2024, 3, 4), "return_outlier")]
    assert "previous close 100.0" in result.quarantine["reason"][0]
    # without it the spike becomes the reference and the good bars after it are blamed
    blind = validate_bars(bars, ValidationConfig(interval="1h"))
    assert blind.quarantine["ts"].to_list() == bars["ts"].to_list()[1:]
    # and the reference of the first gap
    late = validate_bars(
        hourly(0, 3),
        ValidationConfig(interval="1h"),
        previous_bar=(utc(2024, 3, 3, 12), 100.0),
    )
    assert late.gaps["open_missing_bars"].to_list() == [11]
