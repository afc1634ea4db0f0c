from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import ffe_dagster
from ffe_dagster.core.data.bars import OHLCV_SCHEMA
from ffe_dagster.core.regimes.detection import (
    REGIME_SCHEMA,
    Regime,
    RegimeConfig,
    confirmed_regime,
    detect_regimes,
    regime_segments,
)

SAMPLES = Path(ffe_dagster.__file__).parent / "data" / "samples"
START = datetime(2024, 1, 1, tzinfo=UTC)
CONFIG = RegimeConfig()
# 20 daily returns need 21 daily closes (days 0..20); day 20's values apply from day 21.
FIRST_LABELLED_DAY = 21


def hourly_bars(
    closes: Sequence[float], volumes: Sequence[float | None] | None = None
) -> pl.DataFrame:
    """Hourly OHLCV bars from START with the given closes (open = high = low = close)."""
    n = len(closes)
    prices = list(closes)
    return pl.DataFrame(
        {
            "ts": [START + timedelta(hours=h) for h in range(n)],
            "open": prices,
            "high": prices,
            "low": prices,
            "close": prices,
            "volume": list(volumes) if volumes is not None else [1.0] * n,
        },
        schema=OHLCV_SCHEMA,
    )


def compounding_bars(daily_factor: float, days: int) -> pl.DataFrame:
    return hourly_bars([100.0 * daily_factor ** (h / 24) for h in range(days * 24)])


def daily_step_bars(daily_closes: list[float]) -> pl.DataFrame:
    """Every bar of day d closes at daily_closes[d]."""
    return hourly_bars([c for c in daily_closes for _ in range(24)])


def day(d: int) -> datetime:
    return START + timedelta(days=d)


def test_rising_two_percent_a_day_is_bull() -> None:
    out = detect_regimes(compounding_bars(1.02, 30), CONFIG)
    expected_momentum = (1.02**7 - 1) * 100 / 7  # 2.4410...
    assert out.schema == pl.Schema(REGIME_SCHEMA)
    assert out["ts"][0] == day(FIRST_LABELLED_DAY)
    assert out.height == (30 - FIRST_LABELLED_DAY) * 24
    assert out["regime"].to_list() == ["BULL"] * out.height
    assert out["momentum_pct_per_day"].to_numpy() == pytest.approx(expected_momentum, rel=1e-9)
    assert out["trend_efficiency"].to_numpy() == pytest.approx(1.0, abs=1e-9)
    # min(1, (2.44 - 1) / 1) = 1, efficiency 1 -> 50 + 50.
    assert out["confidence_pct"].to_numpy() == pytest.approx(100.0, abs=1e-6)
    assert out["volatility_pct"].to_numpy() == pytest.approx(0.0, abs=1e-9)
    assert set(out["volatility_level"]) == {"LOW"}
    # 30 days of volume are never complete before the last day's values would apply.
    assert out["volume_ratio"].null_count() == out.height


def test_falling_two_percent_a_day_is_bear() -> None:
    out = detect_regimes(compounding_bars(0.98, 30), CONFIG)
    momentum = (0.98**7 - 1) * 100 / 7  # -1.8839...
    confidence = 50 * min(1.0, (abs(momentum) - 1.0) / 1.0) + 50 * 1.0  # 94.19...
    assert set(out["regime"]) == {"BEAR"}
    assert out["momentum_pct_per_day"].to_numpy() == pytest.approx(momentum, rel=1e-9)
    assert out["confidence_pct"].to_numpy() == pytest.approx(confidence, rel=1e-9)


def test_flat_is_sideways_with_full_confidence() -> None:
    out = detect_regimes(daily_step_bars([100.0] * 30), CONFIG)
    assert out.height == (30 - FIRST_LABELLED_DAY) * 24
    assert set(out["regime"]) == {"SIDEWAYS"}
    # No movement at all: efficiency is defined as 0 -> 50 * (1 - 0) + 50 * (1 - 0).
    assert set(out["trend_efficiency"]) == {0.0}
    assert set(out["momentum_pct_per_day"]) == {0.0}
    assert set(out["confidence_pct"]) == {100.0}
    assert set(out["volatility_level"]) == {"LOW"}


@pytest.mark.parametrize(("high", "level"), [(101.0, "NORMAL"), (105.0, "HIGH")])
def test_zigzag_is_sideways_noise(high: float, level: str) -> None:
    closes = [100.0 if d % 2 == 0 else high for d in range(30)]
    out = detect_regimes(daily_step_bars(closes), CONFIG)
    closes_arr = np.array(closes)
    returns = closes_arr[1:] / closes_arr[:-1] - 1
    for d in range(FIRST_LABELLED_DAY, 30):
        row = out.filter(pl.col("ts") == day(d)).row(0, named=True)
        src = d - 1  # values of the previous complete day
        momentum = (closes[src] / closes[src - 7] - 1) * 100 / 7
        efficiency = abs(closes[src] - closes[src - 7]) / (7 * (high - 100.0))  # = 1/7
        volatility = np.std(returns[src - 20 : src], ddof=1) * 100
        assert row["momentum_pct_per_day"] == pytest.approx(momentum, rel=1e-12)
        assert row["trend_efficiency"] == pytest.approx(efficiency, rel=1e-12)
        assert row["volatility_pct"] == pytest.approx(volatility, rel=1e-9)
        assert row["volatility_level"] == level
        if abs(momentum) <= 1.0:
            assert row["regime"] == "SIDEWAYS"
            expected = 50 * (1 - abs(momentum)) + 50 * (1 - efficiency)
            assert row["confidence_pct"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("trend", "regime"), [(1.05, "BULL"), (0.95, "BEAR")])
def test_noisy_trend_confidence(trend: float, regime: str) -> None:
    # Strong trend (|m| > 2t, so the momentum half is capped at 50) with a spike every other
    # day, so efficiency < 1 and confidence = 50 + 50 * efficiency < 100.
    closes = [100.0 * trend**d * (1.06 if d % 2 else 1.0) for d in range(30)]
    out = detect_regimes(daily_step_bars(closes), CONFIG)
    for d in range(FIRST_LABELLED_DAY, 30):
        row = out.filter(pl.col("ts") == day(d)).row(0, named=True)
        src = d - 1
        momentum = (closes[src] / closes[src - 7] - 1) * 100 / 7
        path = sum(abs(closes[i] - closes[i - 1]) for i in range(src - 6, src + 1))
        efficiency = abs(closes[src] - closes[src - 7]) / path
        assert abs(momentum) > 2.0
        assert efficiency < 0.95
        assert row["regime"] == regime
        assert row["trend_efficiency"] == pytest.approx(efficiency, rel=1e-12)
        assert row["confidence_pct"] == pytest.approx(50 + 50 * efficiency, rel=1e-12)


def test_momentum_exactly_at_threshold_is_sideways() -> None:
    # 1 -> 8 is +700 % over 7 days: exactly 100 %/day, no rounding.
    bars = daily_step_bars([1.0] * 22 + [8.0] * 4)
    at = detect_regimes(bars, RegimeConfig(momentum_threshold_pct_per_day=100.0))
    below = detect_regimes(bars, RegimeConfig(momentum_threshold_pct_per_day=99.0))
    jumped = pl.col("ts") >= day(23)
    assert set(at.filter(jumped)["momentum_pct_per_day"]) == {100.0}
    assert set(at.filter(jumped)["regime"]) == {"SIDEWAYS"}
    # Momentum at the band edge and a pure trend: 50 * (1 - 1) + 50 * (1 - 1).
    assert set(at.filter(jumped)["confidence_pct"]) == {0.0}
    assert set(below.filter(jumped)["regime"]) == {"BULL"}


def test_volume_ratio_is_seven_over_thirty_day_mean_volume() -> None:
    days = 40
    volumes = [float(d + 1) for d in range(days) for _ in range(24)]
    bars = hourly_bars([100.0] * (days * 24), volumes)
    out = detect_regimes(bars, CONFIG)
    daily_volume = 24 * (np.arange(days) + 1.0)
    for d in range(FIRST_LABELLED_DAY, days):
        ratio = out.filter(pl.col("ts") == day(d))["volume_ratio"][0]
        src = d - 1
        if src < 29:
            assert ratio is None
        else:
            short, long = daily_volume[src - 6 : src + 1], daily_volume[src - 29 : src + 1]
            assert ratio == pytest.approx(short.mean() / long.mean(), rel=1e-12)
    zero_volume = hourly_bars([100.0] * (days * 24), [0.0] * (days * 24))
    assert detect_regimes(zero_volume, CONFIG)["volume_ratio"].null_count() == out.height


def test_flip_day_still_carries_the_old_regime() -> None:
    # Flat until day 25 noon, then +10 % for good: day 25 closes at 110.
    closes = [100.0] * (25 * 24 + 12) + [110.0] * (5 * 24 + 12)
    out = detect_regimes(hourly_bars(closes), CONFIG)
    flip_day = out.filter((pl.col("ts") >= day(25)) & (pl.col("ts") < day(26)))
    assert flip_day.height == 24
    assert set(flip_day["regime"]) == {"SIDEWAYS"}
    after = out.filter(pl.col("ts") == day(26)).row(0, named=True)
    assert after["regime"] == "BULL"
    assert after["momentum_pct_per_day"] == pytest.approx(10 / 7, rel=1e-12)
    assert after["trend_efficiency"] == pytest.approx(1.0)
    assert after["confidence_pct"] == pytest.approx(50 * (10 / 7 - 1) + 50, rel=1e-12)
    returns = np.zeros(20)
    returns[-1] = 0.1
    assert after["volatility_pct"] == pytest.approx(np.std(returns, ddof=1) * 100, rel=1e-12)


def random_walk_bars(days: int, seed: int = 7) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    closes = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, days * 24)))
    return hourly_bars(list(closes), list(rng.uniform(1.0, 10.0, days * 24)))


def test_changing_future_bars_does_not_change_earlier_rows() -> None:
    bars = random_walk_bars(60)
    base = detect_regimes(bars, CONFIG)
    changed_from = 40 * 24 + 7  # day 40, 07:00
    shocked = bars.with_columns(
        pl.when(pl.int_range(pl.len()) >= changed_from)
        .then(pl.col("close") * 1.5)
        .otherwise(pl.col("close"))
        .alias("close"),
        pl.when(pl.int_range(pl.len()) >= changed_from)
        .then(pl.col("volume") * 9)
        .otherwise(pl.col("volume"))
        .alias("volume"),
    )
    after = detect_regimes(shocked, CONFIG)
    # Day 40's close is affected, so the change may show from day 41 on, never earlier.
    assert_frame_equal(base.filter(pl.col("ts") < day(41)), after.filter(pl.col("ts") < day(41)))
    first_changed = pl.col("ts") == day(41)
    assert base.filter(first_changed).row(0) != after.filter(first_changed).row(0)


def test_output_on_a_prefix_equals_the_prefix_of_the_output() -> None:
    bars = random_walk_bars(60, seed=11)
    full = detect_regimes(bars, CONFIG)
    for cut in (30 * 24 + 5, 45 * 24, 59 * 24 + 23):
        prefix = detect_regimes(bars.head(cut), CONFIG)
        assert_frame_equal(prefix, full.head(prefix.height))
        assert prefix.height == cut - FIRST_LABELLED_DAY * 24


def test_unsorted_input_is_sorted() -> None:
    bars = random_walk_bars(30)
    assert_frame_equal(detect_regimes(bars.reverse(), CONFIG), detect_regimes(bars, CONFIG))


def test_missing_columns_raise_and_empty_input_gives_empty_schema() -> None:
    with pytest.raises(ValueError, match="volume"):
        detect_regimes(compounding_bars(1.01, 5).drop("volume"), CONFIG)
    empty = detect_regimes(pl.DataFrame(schema=OHLCV_SCHEMA), CONFIG)
    assert empty.height == 0
    assert empty.schema == pl.Schema(REGIME_SCHEMA)
    warm_up_only = detect_regimes(compounding_bars(1.01, FIRST_LABELLED_DAY), CONFIG)
    assert warm_up_only.height == 0
    assert warm_up_only.schema == pl.Schema(REGIME_SCHEMA)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RegimeConfig(momentum_threshold_pct_per_day=0.0),
        lambda: RegimeConfig(momentum_days=0),
        lambda: RegimeConfig(low_volatility_pct=3.0, high_volatility_pct=2.0),
        lambda: RegimeConfig(min_confidence_pct=101.0),
    ],
)
def test_config_rejects_nonsense(make: Callable[[], RegimeConfig]) -> None:
    with pytest.raises(ValueError):
        make()


def make_regimes(runs: list[tuple[Regime, int, float]]) -> pl.DataFrame:
    """Hourly regimes frame from START: (regime, number of hourly rows, confidence) per run."""
    labels = [(r.value, conf) for r, n, conf in runs for _ in range(n)]
    n = len(labels)
    return pl.DataFrame(
        {
            "ts": [START + timedelta(hours=h) for h in range(n)],
            "regime": [label for label, _ in labels],
            "momentum_pct_per_day": [0.0] * n,
            "volatility_pct": [1.0] * n,
            "trend_efficiency": [0.5] * n,
            "volume_ratio": [None] * n,
            "confidence_pct": [conf for _, conf in labels],
            "volatility_level": ["NORMAL"] * n,
        },
        schema=REGIME_SCHEMA,
    )


def hour(h: int) -> datetime:
    return START + timedelta(hours=h)


def test_regime_segments() -> None:
    frame = make_regimes(
        [
            (Regime.BULL, 49, 80.0),  # rows 0..48, span 48 h = 2 days
            (Regime.BEAR, 5, 80.0),  # rows 49..53
            (Regime.BULL, 48, 80.0),  # rows 54..101, span 47 h
            (Regime.SIDEWAYS, 10, 80.0),  # rows 102..111
            (Regime.BULL, 73, 80.0),  # rows 112..184, span 3 days
        ]
    )
    assert regime_segments(frame, Regime.BULL, min_days=2) == [
        (hour(0), hour(48)),
        (hour(112), hour(184)),
    ]
    assert regime_segments(frame, Regime.BULL, min_days=0) == [
        (hour(0), hour(48)),
        (hour(54), hour(101)),
        (hour(112), hour(184)),
    ]
    assert regime_segments(frame, Regime.BULL, min_days=3) == [(hour(112), hour(184))]
    assert regime_segments(frame, Regime.BEAR, min_days=0) == [(hour(49), hour(53))]
    assert regime_segments(frame, Regime.BEAR, min_days=1) == []
    assert regime_segments(frame.head(0), Regime.BULL, min_days=0) == []


def test_regime_segments_span_a_gap() -> None:
    # Two BEAR rows three days apart (a market closure) are one run spanning three days.
    frame = make_regimes([(Regime.BEAR, 2, 80.0)]).with_columns(
        pl.Series("ts", [hour(0), hour(72)], dtype=REGIME_SCHEMA["ts"])
    )
    assert regime_segments(frame, Regime.BEAR, min_days=3) == [(hour(0), hour(72))]


def test_confirmed_regime_after_a_persistent_change() -> None:
    exactly_two_days = make_regimes([(Regime.SIDEWAYS, 120, 90.0), (Regime.BULL, 49, 80.0)])
    assert confirmed_regime(exactly_two_days, CONFIG) is Regime.BULL
    one_hour_short = make_regimes([(Regime.SIDEWAYS, 120, 90.0), (Regime.BULL, 48, 80.0)])
    assert confirmed_regime(one_hour_short, CONFIG) is None


def test_confirmed_regime_ignores_whipsaws() -> None:
    flip_at_end = make_regimes([(Regime.BULL, 120, 90.0), (Regime.BEAR, 4, 90.0)])
    assert confirmed_regime(flip_at_end, CONFIG) is None
    recent_flip_back = make_regimes(
        [(Regime.BULL, 120, 90.0), (Regime.BEAR, 3, 90.0), (Regime.BULL, 24, 90.0)]
    )
    assert confirmed_regime(recent_flip_back, CONFIG) is None
    old_flip = make_regimes(
        [(Regime.BULL, 120, 90.0), (Regime.BEAR, 3, 90.0), (Regime.BULL, 60, 90.0)]
    )
    assert confirmed_regime(old_flip, CONFIG) is Regime.BULL


def test_confirmed_regime_needs_confidence_and_history() -> None:
    assert confirmed_regime(make_regimes([(Regime.BEAR, 120, 59.9)]), CONFIG) is None
    assert confirmed_regime(make_regimes([(Regime.BEAR, 120, 60.0)]), CONFIG) is Regime.BEAR
    # Only 23 hours of history cannot show two days of persistence.
    assert confirmed_regime(make_regimes([(Regime.BEAR, 24, 95.0)]), CONFIG) is None
    assert confirmed_regime(make_regimes([]), CONFIG) is None
    instant = RegimeConfig(min_persistence_days=0, min_confidence_pct=50.0)
    flip = make_regimes([(Regime.BULL, 120, 90.0), (Regime.BEAR, 1, 55.0)])
    assert confirmed_regime(flip, instant) is Regime.BEAR


def share(frame: pl.DataFrame, start: datetime, end: datetime) -> dict[str, float]:
    window = frame.filter((pl.col("ts") >= start) & (pl.col("ts") < end))
    assert window.height > 0
    counts = window["regime"].value_counts()
    return {r: c / window.height for r, c in counts.iter_rows()}


def utc(year: int, month: int, d: int) -> datetime:
    return datetime(year, month, d, tzinfo=UTC)


def test_btc_sample_regimes() -> None:
    bars = pl.read_parquet(SAMPLES / "BTC_USDT_1h.parquet")
    out = detect_regimes(bars, CONFIG)
    assert out.schema == pl.Schema(REGIME_SCHEMA)
    assert out["ts"].is_sorted()
    assert out.height == bars.filter(pl.col("ts") >= out["ts"][0]).height
    assert out["confidence_pct"].is_between(0.0, 100.0).all()
    assert out["trend_efficiency"].is_between(0.0, 1.0).all()
    assert out["volume_ratio"].drop_nulls().len() > 0

    bull_run = share(out, utc(2020, 12, 1), utc(2021, 4, 1))
    assert max(bull_run, key=lambda r: bull_run[r]) == "BULL"  # plurality (47 %)
    assert share(out, utc(2020, 12, 1), utc(2021, 3, 1))["BULL"] > 0.5
    # May-June 2022 is mostly SIDEWAYS at +-1 %/day, but BEAR still outweighs BULL there,
    # and the crashes themselves are clearly BEAR.
    may_june = share(out, utc(2022, 5, 1), utc(2022, 7, 1))
    assert may_june["BEAR"] > 3 * may_june.get("BULL", 0.0)
    assert share(out, utc(2022, 6, 10), utc(2022, 6, 25))["BEAR"] > 0.5
    assert share(out, utc(2021, 5, 13), utc(2021, 5, 27))["BEAR"] > 0.9


def test_eur_usd_sample_without_volume() -> None:
    bars = pl.read_parquet(SAMPLES / "EUR_USD_1h.parquet")
    assert bars["volume"].null_count() == bars.height
    out = detect_regimes(bars, CONFIG)
    assert out.height > 20_000
    assert out["volume_ratio"].null_count() == out.height
    assert out["trend_efficiency"].null_count() == 0
    assert set(out["regime"]) <= {r.value for r in Regime}
    # Daily closes computed independently; Sunday-evening bars form their own short day.
    closes: dict[datetime, float] = {}
    for ts, close in bars.select("ts", "close").iter_rows():
        closes[datetime(ts.year, ts.month, ts.day, tzinfo=UTC)] = close
    days = sorted(closes)

    def momentum_of(source_day: datetime) -> float:
        i = days.index(source_day)
        return (closes[days[i]] / closes[days[i - 7]] - 1) * 100 / 7

    # Sunday evening bars carry Friday's values; Monday's bars carry the Sunday stub's.
    sunday_bar = out.filter(pl.col("ts") == utc(2023, 3, 12) + timedelta(hours=21))
    monday_bar = out.filter(pl.col("ts") == utc(2023, 3, 13))
    assert utc(2023, 3, 11) not in closes
    assert sunday_bar["momentum_pct_per_day"][0] == pytest.approx(momentum_of(utc(2023, 3, 10)))
    assert monday_bar["momentum_pct_per_day"][0] == pytest.approx(momentum_of(utc(2023, 3, 12)))
