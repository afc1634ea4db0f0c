"""Indicators, entry signals and file signals, checked against numbers worked out by hand."""

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ffe_dagster.core.backtest import strategies
from ffe_dagster.core.backtest.metrics import FloatArray
from ffe_dagster.core.backtest.reference import Segment
from ffe_dagster.core.backtest.strategies import (
    IndicatorCache,
    donchian_breakout_signals,
    get_strategy,
    rolling_max,
    rolling_mean,
    rolling_min,
    rsi,
    rsi_reversion_signals,
    sma_crossover_signals,
)
from ffe_dagster.sources.files import read_signal_file

NAN = np.nan
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _arr(values: Sequence[float]) -> FloatArray:
    return np.asarray(values, dtype=np.float64)


def _segment(
    close: Sequence[float],
    high: Sequence[float] | None = None,
    low: Sequence[float] | None = None,
    instrument: str = "BTC_USDT",
) -> Segment:
    """Hourly bars from 2024-01-01 00:00 UTC (naive datetime64, as segments hold them)."""
    ts = np.datetime64("2024-01-01T00:00", "us") + np.arange(len(close)) * np.timedelta64(1, "h")
    c = _arr(close)
    return Segment(
        instrument=instrument,
        ts=ts,
        open=c,
        high=_arr(high) if high is not None else c,
        low=_arr(low) if low is not None else c,
        close=c,
        periods_per_year=24 * 365.0,
    )


def _hour(n: int) -> datetime:
    return T0 + timedelta(hours=n)


# --- rolling windows ---------------------------------------------------------------------------

VALUES = _arr([3, 1, 4, 1, 5, 9, 2])


def test_rolling_max_min_mean_by_hand() -> None:
    # Window 3 over 3 1 4 1 5 9 2: windows (3 1 4) (1 4 1) (4 1 5) (1 5 9) (5 9 2).
    np.testing.assert_array_equal(rolling_max(VALUES, 3), [NAN, NAN, 4, 4, 5, 9, 9])
    np.testing.assert_array_equal(rolling_min(VALUES, 3), [NAN, NAN, 1, 1, 1, 1, 2])
    np.testing.assert_allclose(
        rolling_mean(VALUES, 3), [NAN, NAN, 8 / 3, 6 / 3, 10 / 3, 15 / 3, 16 / 3], rtol=1e-12
    )


def test_rolling_edge_windows() -> None:
    for fn in (rolling_max, rolling_min, rolling_mean):
        np.testing.assert_array_equal(fn(VALUES, 1), VALUES)  # a window of one is the input
        assert np.isnan(fn(VALUES, 8)).all()  # longer than the data: never fills
        assert np.isnan(fn(VALUES, 7)[:6]).all()
        with pytest.raises(ValueError, match="window must be >= 1"):
            fn(VALUES, 0)
    # The whole series as one window: max 9, min 1, mean 25 / 7.
    assert rolling_max(VALUES, 7)[-1] == 9
    assert rolling_min(VALUES, 7)[-1] == 1
    assert rolling_mean(VALUES, 7)[-1] == pytest.approx(25 / 7, rel=1e-12)


def test_rolling_does_not_alter_its_input() -> None:
    before = VALUES.copy()
    for fn in (rolling_max, rolling_min, rolling_mean):
        fn(VALUES, 2)
    np.testing.assert_array_equal(VALUES, before)


# --- RSI ---------------------------------------------------------------------------------------


def test_wilder_rsi_by_hand() -> None:
    close = _arr([10, 11, 12, 11, 13, 12, 12, 14, 13])
    # Changes:             +1  +1  -1  +2  -1   0  +2  -1     (bars 1..8), period 3.
    # Bar 3: first averages are simple means of bars 1..3: gain (1+1+0)/3 = 2/3,
    #        loss (0+0+1)/3 = 1/3. RSI = 100 * gain / (gain + loss) = 100 * 2/3 = 66.67.
    # Then avg = (avg * 2 + x) / 3:
    # Bar 4 (+2): gain (4/3 + 2)/3 = 10/9,   loss (2/3)/3 = 2/9         -> 100 * 10/12
    # Bar 5 (-1): gain (20/9)/3 = 20/27,     loss (4/9 + 1)/3 = 13/27   -> 100 * 20/33
    # Bar 6 ( 0): gain 40/81,                loss 26/81                 -> 100 * 40/66
    # Bar 7 (+2): gain (80/81 + 2)/3 = 242/243, loss (52/81)/3 = 52/243 -> 100 * 242/294
    # Bar 8 (-1): gain 484/729,  loss (104/243 + 1)/3 = 347/729         -> 100 * 484/831
    expected = [NAN, NAN, NAN, 200 / 3, 1000 / 12, 2000 / 33, 4000 / 66, 24200 / 294, 48400 / 831]
    np.testing.assert_allclose(rsi(close, 3), expected, rtol=1e-12)


def test_rsi_reads_100_without_average_loss_then_smooths() -> None:
    # Bars 1..3 rise by 1: loss 0 -> 100. Bar 4 falls 1: gain (1*2+0)/3 = 2/3, loss 1/3 -> 66.67.
    np.testing.assert_allclose(
        rsi(_arr([1, 2, 3, 4, 3]), 3), [NAN, NAN, NAN, 100.0, 200 / 3], rtol=1e-12
    )


def test_rsi_warm_up_and_bad_period() -> None:
    assert np.isnan(rsi(_arr([1, 2, 3]), 3)).all()  # 2 changes cannot fill a period of 3
    with pytest.raises(ValueError, match="period must be >= 2"):
        rsi(_arr([1, 2, 3, 4]), 1)


# --- entry signals -----------------------------------------------------------------------------


def test_sma_crossover_fires_on_the_crossing_bar_only() -> None:
    close = [10, 10, 10, 10, 14, 14, 6, 6, 6, 14]
    # SMA2:  nan 10 10 10 12 14 10  6  6 10
    # SMA4:  nan nan nan 10 11 12 11 10  8  8
    # diff:  nan nan nan  0  1  2 -1 -4 -2  2
    # Bar 3 is the first valid bar (diff 0 counts as "below") but has no previous valid bar, so
    # it does not fire; bar 4 crosses up, bar 6 down, bar 9 up. Bars 5, 7, 8 hold: no signal.
    cache = IndicatorCache(_segment(close))
    signals = sma_crossover_signals(cache, {"fast_window": 2, "slow_window": 4})
    assert signals.tolist() == [0, 0, 0, 0, 1, 0, -1, 0, 0, 1]
    assert signals.dtype == np.int8


def test_sma_crossover_forces_the_slow_window_above_the_fast_one() -> None:
    close = [10, 10, 10, 10, 14, 14, 6, 6, 6, 14]
    # slow 2 = fast 2 is read as slow 3.  SMA3: nan nan 10 10 11.33 12.67 11.33 8.67 6 8.67
    # diff = SMA2 - SMA3: nan nan 0 0 .67 1.33 -1.33 -2.67 0 1.33 -> up at 4 and 9, down at 6.
    # (A window crossed with itself would give diff 0 everywhere and never a +1.)
    cache = IndicatorCache(_segment(close))
    signals = sma_crossover_signals(cache, {"fast_window": 2, "slow_window": 2})
    assert signals.tolist() == [0, 0, 0, 0, 1, 0, -1, 0, 0, 1]
    assert set(cache._store) == {("sma", 2), ("sma", 3)}


def test_donchian_channel_excludes_the_current_bar() -> None:
    high = [10, 11, 10, 12, 13, 11, 10, 10, 12, 13]
    low = [8, 9, 8, 9, 10, 9, 5, 4, 8, 11]
    close = [9, 10, 9, 11.5, 12.5, 10, 6, 4.5, 10, 12.5]
    # Window 2, previous two bars only:
    # upper = max(high[i-2], high[i-1]): nan nan 11 11 12 13 13 11 10 12
    # lower = min(low[i-2], low[i-1]):   nan nan  8  8  8  9  9  5  4  4
    # close > upper on bars 3, 4, 9 -> +1 on 3 (4 continues the breakout) and on 9.
    # Bar 3 breaks 11 although its own high is 12: a channel with the current bar would not fire.
    # Bar 8 closes at exactly the upper band (10): not a breakout.
    # close < lower on bars 6, 7 -> -1 on 6 only.
    cache = IndicatorCache(_segment(close, high, low))
    signals = donchian_breakout_signals(cache, {"channel_window": 2})
    assert signals.tolist() == [0, 0, 0, 1, 0, 0, -1, 0, 0, 1]


def test_rsi_reversion_fires_on_leaving_oversold_and_overbought() -> None:
    close = [10, 9, 8, 9, 10, 11, 10, 9, 11]
    # Period 2, changes -1 -1 +1 +1 +1 -1 -1 +2 (bars 1..8); avg = (avg + x) / 2 after bar 2.
    # Bar 2: gain 0, loss 1                   -> RSI 0      (first valid bar: no signal)
    # Bar 3: gain .5, loss .5                 -> 50         leaves oversold (<= 30): +1
    # Bar 4: gain .75, loss .25               -> 75
    # Bar 5: gain .875, loss .125             -> 87.5
    # Bar 6: gain .4375, loss .5625           -> 43.75      leaves overbought (>= 70): -1
    # Bar 7: gain .21875, loss .78125         -> 21.875
    # Bar 8: gain 1.109375, loss .390625      -> 73.96      leaves oversold again: +1
    cache = IndicatorCache(_segment(close))
    np.testing.assert_allclose(
        cache.rsi(2), [NAN, NAN, 0, 50, 75, 87.5, 43.75, 21.875, 1.109375 / 1.5 * 100]
    )
    params = {"rsi_period": 2, "rsi_lower": 30, "rsi_upper": 70}
    signals = rsi_reversion_signals(cache, params)
    assert signals.tolist() == [0, 0, 0, 1, 0, 0, -1, 0, 1]


def test_entry_strategy_picks_its_own_parameters() -> None:
    bars = _segment([10, 10, 10, 10, 14, 14, 6, 6, 6, 14])
    params = {"fast_window": 2, "slow_window": 4, "stop_loss_pct": 2.0, "channel_window": 3}
    signals = get_strategy("sma_crossover").signals_for(bars, params)
    assert signals.tolist() == [0, 0, 0, 0, 1, 0, -1, 0, 0, 1]


# --- indicator cache ---------------------------------------------------------------------------


def test_indicator_cache_computes_each_window_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = strategies.rolling_mean

    def counting(values: FloatArray, window: int) -> FloatArray:
        calls.append(window)
        return real(values, window)

    monkeypatch.setattr(strategies, "rolling_mean", counting)
    cache = IndicatorCache(_segment([1, 2, 3, 4, 5, 6]))
    first = cache.sma(3)
    assert cache.sma(3) is first
    assert cache.sma(4) is not first
    assert cache.sma(4) is cache.sma(4)
    assert calls == [3, 4]
    assert cache.highest_high(3) is cache.highest_high(3)
    assert cache.highest_high(3) is not cache.lowest_low(3)
    assert cache.rsi(3) is cache.rsi(3)
    assert len(cache._store) == 5  # sma 3, sma 4, hh 3, ll 3, rsi 3


# --- file signals ------------------------------------------------------------------------------


def _write(path: Path, frame: pl.DataFrame) -> Path:
    frame.write_parquet(path)
    return path


def test_file_signals_align_to_the_bars(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "signals.parquet",
        pl.DataFrame(
            {
                # 23:00 the day before and 10:00 have no bar: ignored. 00, 02, 04 have no row: 0.
                "ts": [_hour(-1), _hour(1), _hour(3), _hour(10)],
                "signal": [1, 1, -1, -1],
            }
        ),
    )
    strategy = get_strategy("file_signals", signals=read_signal_file(path))
    assert strategy.name == "file_signals" and strategy.param_names == ()
    signals = strategy.signals_for(_segment([1, 2, 3, 4, 5]), {})
    assert signals.tolist() == [0, 1, 0, -1, 0]
    assert signals.dtype == np.int8
    # Without an instrument column the same signals apply to every instrument.
    other = strategy.signals_for(_segment([1, 2, 3, 4, 5], instrument="ETH_USDT"), {})
    assert other.tolist() == [0, 1, 0, -1, 0]


def test_file_signals_match_instants_whatever_the_stored_precision_and_zone(
    tmp_path: Path,
) -> None:
    # 02:00 in Paris (winter, UTC+1) is 01:00 UTC; nanosecond stamps are common from pandas.
    frame = pl.DataFrame(
        {"ts": [datetime(2024, 1, 1, 2), datetime(2024, 1, 1, 3)], "signal": [1, -1]}
    ).with_columns(
        pl.col("ts").dt.replace_time_zone("Europe/Paris").cast(pl.Datetime("ns", "Europe/Paris"))
    )
    path = _write(tmp_path / "paris.parquet", frame)
    signals = read_signal_file(path).strategy().signals_for(_segment([1, 2, 3, 4]), {})
    assert signals.tolist() == [0, 1, -1, 0]


def test_file_signals_per_instrument(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "multi.parquet",
        pl.DataFrame(
            {
                "ts": [_hour(0), _hour(2), _hour(0), _hour(1)],
                "instrument": ["BTC_USDT", "BTC_USDT", "ETH_USDT", "ETH_USDT"],
                "signal": [1, -1, -1, 1],
            }
        ),
    )
    strategy = get_strategy("file_signals", signals=read_signal_file(path))
    close = [1.0, 2.0, 3.0]
    assert strategy.signals_for(_segment(close, instrument="BTC_USDT"), {}).tolist() == [1, 0, -1]
    assert strategy.signals_for(_segment(close, instrument="ETH_USDT"), {}).tolist() == [-1, 1, 0]
    assert strategy.signals_for(_segment(close, instrument="SOL_USDT"), {}).tolist() == [0, 0, 0]


def test_signal_file_without_a_signal_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "cols.parquet", pl.DataFrame({"ts": [_hour(0)], "side": [1]}))
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['signal'\]") as err:
        get_strategy("file_signals", signals=read_signal_file(path))
    assert str(path) in str(err.value)


def test_signal_outside_minus_one_to_one_names_the_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "two.parquet", pl.DataFrame({"ts": [_hour(0), _hour(1)], "signal": [1, 2]})
    )
    with pytest.raises(ValueError, match="outside") as err:
        get_strategy("file_signals", signals=read_signal_file(path))
    assert str(path) in str(err.value)
    assert "1 row(s)" in str(err.value)


def test_null_signal_is_rejected(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "null.parquet", pl.DataFrame({"ts": [_hour(0), _hour(1)], "signal": [1, None]})
    )
    with pytest.raises(ValueError, match=re.escape(str(path))):
        read_signal_file(path)


def test_file_signals_need_a_file() -> None:
    with pytest.raises(ValueError, match="needs a signal file"):
        get_strategy("file_signals")


def test_unknown_strategy_lists_the_known_names() -> None:
    with pytest.raises(ValueError, match="unknown entry strategy 'nope'") as err:
        get_strategy("nope")
    for name in ("sma_crossover", "donchian_breakout", "rsi_reversion", "file_signals"):
        assert name in str(err.value)
