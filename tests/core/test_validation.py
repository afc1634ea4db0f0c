import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from ffe_dagster.core.data.bars import OHLCV_SCHEMA
from ffe_dagster.core.data.validation import (
    QUARANTINE_SCHEMA,
    ValidationResult,
    validate_bars,
)
from ffe_dagster.core.data.validation_rules import ValidationConfig

SAMPLES = Path(__file__).parents[2] / "ffe_dagster" / "data" / "samples"
START = datetime(2024, 1, 1, tzinfo=UTC)
CRYPTO = ValidationConfig()
FOREX = ValidationConfig(require_volume=False)


def make_bars(n: int = 5) -> pl.DataFrame:
    """``n`` clean hourly bars around 100 with a gentle drift."""
    closes = [100.0 + i for i in range(n)]
    return pl.DataFrame(
        {
            "ts": [START + timedelta(hours=i) for i in range(n)],
            "open": [c - 0.5 for c in closes],
            "high": [c + 1.0 for c in closes],
            "low": [c - 1.0 for c in closes],
            "close": closes,
            "volume": [10.0 + i for i in range(n)],
        },
        schema=OHLCV_SCHEMA,
    )


def set_bar(bars: pl.DataFrame, index: int, **values: float | None) -> pl.DataFrame:
    """A copy of ``bars`` with the given columns of row ``index`` replaced."""
    row = pl.int_range(pl.len()) == index
    return bars.with_columns(
        pl.when(row).then(pl.lit(value, dtype=pl.Float64)).otherwise(pl.col(name)).alias(name)
        for name, value in values.items()
    )


def rules_of(result: ValidationResult) -> set[str]:
    return set(result.quarantine["rule"].to_list())


def assert_no_loss(bars: pl.DataFrame, result: ValidationResult) -> None:
    assert result.valid.height + result.quarantine["ts"].n_unique() == bars.height
    assert result.valid.height + result.quarantined_rows == result.rows_checked == bars.height


def test_clean_bars_pass_unchanged() -> None:
    bars = make_bars()
    result = validate_bars(bars, CRYPTO)
    assert result.quarantine.height == 0
    assert result.valid.equals(bars)
    assert result.quarantined_rows == 0
    assert result.quarantine_fraction == 0.0
    assert result.suite_success_on_valid
    assert all(rule.success and rule.unexpected_count == 0 for rule in result.rules)
    assert "return_outlier" in {rule.rule for rule in result.rules}


def test_unsorted_input_is_sorted_not_quarantined() -> None:
    bars = make_bars()
    result = validate_bars(bars.reverse(), CRYPTO)
    assert result.quarantine.height == 0
    assert result.valid.equals(bars)


@pytest.mark.parametrize(
    ("changes", "rule", "reason_part"),
    [
        ({"high": 97.0}, "high_ge_close", "high 97.0 < close 102.0"),  # also below low 101.0
        ({"high": 101.5}, "high_ge_close", "high 101.5 < close 102.0"),
        ({"low": -1.0}, "prices_positive", "low -1.0"),
        ({"close": math.nan}, "close_not_null", "close is NaN"),
        ({"volume": None}, "volume_not_null", "volume is null"),
        ({"volume": -3.0}, "volume_non_negative", "volume -3.0 < 0"),
        (
            {"open": 1015.0, "high": 1030.0, "low": 1010.0, "close": 1020.0},
            "return_outlier",
            "close 1020.0 / previous close 101.0",
        ),
    ],
)
def test_broken_bar_is_quarantined(
    changes: dict[str, float | None], rule: str, reason_part: str
) -> None:
    bars = set_bar(make_bars(), 2, **changes)
    before = bars.clone()
    result = validate_bars(bars, CRYPTO)

    assert bars.equals(before)
    assert result.valid.height == 4
    assert result.quarantine["ts"].unique().to_list() == [START + timedelta(hours=2)]
    reasons = dict(zip(result.quarantine["rule"], result.quarantine["reason"], strict=True))
    assert rule in reasons
    assert reason_part in reasons[rule]
    assert next(r for r in result.rules if r.rule == rule).unexpected_count == 1
    assert result.suite_success_on_valid
    assert_no_loss(bars, result)


def test_high_below_low_breaks_every_high_rule() -> None:
    result = validate_bars(set_bar(make_bars(), 1, high=98.0), CRYPTO)
    assert rules_of(result) == {"high_ge_open", "high_ge_close"}
    assert set(result.quarantine["reason"]) == {"high 98.0 < open 100.5", "high 98.0 < close 101.0"}


def test_nan_price_is_reported_once() -> None:
    result = validate_bars(set_bar(make_bars(), 3, high=math.nan), CRYPTO)
    assert result.quarantine["rule"].to_list() == ["high_not_null"]
    assert result.quarantine["high"].is_nan().to_list() == [True]


def test_duplicate_ts_keeps_first_occurrence() -> None:
    bars = make_bars()
    duplicate = bars.slice(1, 1).with_columns(close=pl.lit(101.25))
    result = validate_bars(pl.concat([bars, duplicate]), CRYPTO)

    assert result.valid.equals(bars)
    assert result.quarantine["rule"].to_list() == ["ts_unique"]
    assert result.quarantine["close"].to_list() == [101.25]
    assert "2024-01-01 01:00:00" in result.quarantine["reason"][0]


def test_spike_quarantines_only_the_spike() -> None:
    bars = set_bar(make_bars(), 2, open=1010.0, high=1030.0, low=1000.0, close=1020.0)
    result = validate_bars(bars, CRYPTO)
    assert result.quarantine["rule"].to_list() == ["return_outlier"]
    assert result.valid["close"].to_list() == [100.0, 101.0, 103.0, 104.0]


def test_all_defects_at_once_shuffled() -> None:
    bars = make_bars(12)
    broken = (
        set_bar(bars, 1, high=50.0)
        .pipe(set_bar, 3, open=-2.0)
        .pipe(set_bar, 5, close=math.nan)
        .pipe(set_bar, 7, volume=None)
        .pipe(set_bar, 9, open=1100.0, high=1100.0, low=1080.0, close=1090.0)
    )
    frame = pl.concat([broken, bars.slice(10, 1).with_columns(close=pl.lit(110.5))])
    frame = frame.sample(fraction=1.0, shuffle=True, seed=7)
    before = frame.clone()

    result = validate_bars(frame, CRYPTO)

    assert frame.equals(before)
    assert result.valid.height == 12 - 5
    assert result.valid["ts"].is_sorted()
    expected = {"high_ge_open", "prices_positive", "close_not_null", "volume_not_null"}
    assert expected | {"return_outlier", "ts_unique"} <= rules_of(result)
    assert result.quarantined_rows == 6
    assert result.quarantine_fraction == pytest.approx(6 / 13)
    assert result.suite_success_on_valid
    assert not next(r for r in result.rules if r.rule == "ts_unique").success
    assert dict(result.quarantine.schema) == QUARANTINE_SCHEMA
    assert_no_loss(frame, result)


def test_forex_config_accepts_missing_volume() -> None:
    bars = make_bars().with_columns(volume=pl.lit(None, dtype=pl.Float64))
    assert validate_bars(bars, FOREX).quarantine.height == 0
    strict = validate_bars(bars, CRYPTO)
    assert strict.valid.height == 0
    assert rules_of(strict) == {"volume_not_null"}
    assert strict.quarantine_fraction == 1.0


def test_forex_config_still_rejects_negative_volume() -> None:
    result = validate_bars(set_bar(make_bars(), 0, volume=-1.0), FOREX)
    assert rules_of(result) == {"volume_non_negative"}


def test_empty_input() -> None:
    result = validate_bars(pl.DataFrame(schema=OHLCV_SCHEMA), CRYPTO)
    assert result.valid.height == 0
    assert result.quarantine.height == 0
    assert result.rows_checked == 0
    assert result.quarantine_fraction == 0.0
    assert result.suite_success_on_valid


def test_missing_column_raises() -> None:
    with pytest.raises(ValueError, match="volume"):
        validate_bars(make_bars().drop("volume"), CRYPTO)


def test_btc_covid_crash_is_not_an_outlier() -> None:
    btc = pl.read_parquet(SAMPLES / "BTC_USDT_1h.parquet").filter(
        pl.col("ts").dt.year() == 2020, pl.col("ts").dt.month() == 3
    )
    worst = btc.select(pl.col("close").log().diff().min()).item()
    assert worst < -0.15

    result = validate_bars(btc, CRYPTO)
    assert result.quarantined_rows == 0
    assert result.valid.equals(btc)


def test_eur_usd_sample_without_volume_passes_forex_config() -> None:
    eur = pl.read_parquet(SAMPLES / "EUR_USD_1h.parquet")
    assert eur["volume"].null_count() == eur.height

    result = validate_bars(eur, FOREX)
    assert result.quarantined_rows == 0
    assert result.valid.height == eur.height
    assert result.suite_success_on_valid


def test_a_bar_off_the_interval_grid_is_quarantined_with_its_reason() -> None:
    # Hourly bars at 00:00..04:00; the 02:00 bar arrives stamped 02:03 (3 minutes late).
    bars = make_bars(5).with_columns(
        pl.when(pl.col("ts") == START + timedelta(hours=2))
        .then(pl.col("ts") + timedelta(minutes=3))
        .otherwise(pl.col("ts"))
        .alias("ts")
    )
    result = validate_bars(bars, ValidationConfig(interval="1h"))
    assert result.quarantine["rule"].to_list() == ["ts_on_grid"]
    assert result.quarantine["reason"].to_list() == [
        "ts 2024-01-01 02:03:00 UTC is off the 1h grid (bars open at multiples of 1h since the "
        "epoch)"
    ]
    assert result.valid["ts"].to_list() == [START + timedelta(hours=h) for h in (0, 1, 3, 4)]
    assert result.suite_success_on_valid
    # without an interval there is no grid to be off
    assert validate_bars(bars, ValidationConfig()).quarantine.is_empty()
