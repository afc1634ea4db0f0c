"""Look-ahead analysis: built-in strategies pass, a peeking strategy and a late signal file fail,
and the one-bar-delay figure is checked by hand."""

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ffe_dagster.config.settings import PACKAGE_DIR
from ffe_dagster.core.backtest.reference import CostModel, Direction, Segment
from ffe_dagster.core.backtest.strategies import (
    STRATEGIES,
    EntryStrategy,
    IndicatorCache,
    Signals,
    get_strategy,
)
from ffe_dagster.core.study.evaluation import LevelEvaluator, Period
from ffe_dagster.core.study.level_specs import bars_to_segment
from ffe_dagster.core.study.lookahead import (
    LookaheadError,
    check_lookahead,
    check_signal_file_timing,
    delay_signals,
    delayed_signal_effect,
    lookahead_analysis,
)
from ffe_dagster.sources.files import read_signal_file

EXITS = {
    "stop_loss_pct": 2.0,
    "take_profit_pct": 4.0,
    "position_size_pct": 2.0,
    "trailing_stop_pct": 1.5,
    "stop_mode": "fixed",
}
STRATEGY_PARAMS = {
    "sma_crossover": [
        {"fast_window": 5, "slow_window": 20},
        {"fast_window": 30, "slow_window": 90},
    ],
    "donchian_breakout": [{"channel_window": 10}, {"channel_window": 55}],
    "rsi_reversion": [{"rsi_period": 14, "rsi_lower": 30, "rsi_upper": 70}],
}


@pytest.fixture(scope="module")
def segments() -> list[Segment]:
    out = []
    for symbol in ("BTC_USDT", "EUR_USD"):
        frame = pl.read_parquet(PACKAGE_DIR / "data" / "samples" / f"{symbol}_1h.parquet").filter(
            pl.col("ts").is_between(
                datetime(2023, 3, 1, tzinfo=UTC), datetime(2023, 4, 15, tzinfo=UTC)
            )
        )
        out.append(bars_to_segment(frame, symbol, 8766.0))
    return out


def test_every_built_in_strategy_is_checked_here() -> None:
    assert set(STRATEGY_PARAMS) == set(STRATEGIES)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_built_in_strategies_do_not_look_ahead(segments: list[Segment], name: str) -> None:
    sets = [{**EXITS, **p} for p in STRATEGY_PARAMS[name]]
    report = check_lookahead(STRATEGIES[name], segments, sets)
    assert report.passed, report.mismatches
    # Up to 20 entry bars per segment and set are cut at.
    entries = [
        np.count_nonzero(STRATEGIES[name].signals_for(s, {k: float(v) for k, v in p.items()}))
        for p in STRATEGY_PARAMS[name]
        for s in segments
    ]
    assert report.cuts_checked == sum(min(20, n) for n in entries) >= 40


def _peeking(cache: IndicatorCache, params: Mapping[str, float]) -> Signals:
    # Goes long when the *next* close is higher: close.shift(-1) > close.
    close = cache.bars.close
    nxt = np.append(close[1:], np.nan)
    up = nxt > close * (1.0 + float(params["edge"]))
    signals = np.zeros(close.shape, dtype=np.int8)
    signals[up] = 1
    signals[~up] = -1
    return signals


PEEKING = EntryStrategy("peek_next_close", _peeking, ("edge",))


def test_a_peeking_user_strategy_fails_naming_the_bar_and_params(segments: list[Segment]) -> None:
    report = check_lookahead(PEEKING, segments, [{**EXITS, "edge": 0.0}])
    assert not report.passed
    first = report.mismatches[0]
    # Cut just after an entry bar, the last bar has no next close: its signal flips to -1.
    assert first.bar_index == first.cut_index
    assert (first.full_signal, first.truncated_signal) == (1, -1)
    assert first.instrument == "BTC_USDT" and first.params == {"edge": 0.0}
    evaluator = LevelEvaluator(segments, PEEKING, Direction.BOTH, CostModel(), 0.6, 0.2)
    with pytest.raises(LookaheadError) as caught:
        lookahead_analysis(evaluator, [{**EXITS, "edge": 0.0}])
    message = str(caught.value)
    assert "peek_next_close" in message and first.bar in message and "'edge': 0.0" in message


def _hourly(n: int, close: list[float] | None = None) -> Segment:
    start = np.datetime64("2024-01-01T00:00", "us")
    ts = start + np.arange(n) * np.timedelta64(1, "h")
    c = np.asarray(close if close is not None else 100.0 + np.arange(n) * 0.1, dtype=np.float64)
    return Segment("X", ts, c, c, c, c, periods_per_year=8766.0)


def _write_signals(path: Path, rows: list[tuple[datetime, int, datetime]]) -> Path:
    pl.DataFrame(
        {
            "ts": [r[0] for r in rows],
            "signal": [r[1] for r in rows],
            "known_at": [r[2] for r in rows],
        }
    ).write_parquet(path)
    return path


T0 = datetime(2024, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)


def test_signal_file_known_after_its_fill_is_flagged(tmp_path: Path) -> None:
    segment = _hourly(48)
    path = _write_signals(
        tmp_path / "late.parquet",
        [
            (T0 + 5 * H, 1, T0 + 6 * H),  # known at its bar's close: in time
            (T0 + 10 * H, -1, T0 + 12 * H),  # known an hour after its fill: look-ahead
            (T0 + 20 * H + timedelta(minutes=30), 1, T0 + 20 * H),  # no bar opens then
            (T0 + 30 * H, 0, T0 + 40 * H),  # no signal: nothing to check
        ],
    )
    signals = read_signal_file(path)
    timing = check_signal_file_timing(signals.frame, [segment], H)
    assert timing.signals == 3 and timing.off_bar == 1 and timing.information_time_given
    assert [(s.ts, s.known_at) for s in timing.late] == [
        ("2024-01-01T10:00:00.000000", "2024-01-01T12:00:00.000000")
    ]
    evaluator = LevelEvaluator(
        [segment], get_strategy("file_signals", signals=signals), Direction.BOTH,
        CostModel(), 0.6, 0.2,
    )  # fmt: skip
    with pytest.raises(LookaheadError, match=r"bar 2024-01-01T10:00:00\.000000 known at"):
        lookahead_analysis(evaluator, [EXITS], signals=signals)


def test_a_timely_signal_file_passes_and_reports_the_delay(tmp_path: Path) -> None:
    segment = _hourly(48)
    rows = [(T0 + k * H, s, T0 + (k + 1) * H) for k, s in ((30, 1), (34, -1), (40, 1))]
    signals = read_signal_file(_write_signals(tmp_path / "ok.parquet", rows))
    evaluator = LevelEvaluator(
        [segment], get_strategy("file_signals", signals=signals), Direction.BOTH,
        CostModel(), 0.6, 0.2,
    )  # fmt: skip
    report = lookahead_analysis(evaluator, [EXITS], signals=signals)
    assert report["signal_file"]["passed"] and report["signal_file"]["signals"] == 3
    assert report["delay_one_bar"]["period"] == "test"


def test_delay_by_one_bar_by_hand() -> None:
    # Closes 100..105; long at bar 1, out at bar 3; $100 positions (1 % of 10,000), no costs.
    # As given: 100/101 units bought at 101, sold at 103: PnL 200/101 = $1.9802.
    # One bar later: bought at 102, sold at 104: PnL 200/102 = $1.9608.
    segment = _hourly(6, [100.0, 101.0, 102.0, 103.0, 104.0, 105.0])
    fixed = np.array([0, 1, 0, -1, 0, 0], dtype=np.int8)
    np.testing.assert_array_equal(delay_signals(fixed, [6]), [0, 0, 1, 0, -1, 0])
    np.testing.assert_array_equal(
        delay_signals(np.concatenate([fixed, fixed]), [6, 6]), [0, 0, 1, 0, -1, 0] * 2
    )
    strategy = EntryStrategy("fixed", lambda cache, params: fixed.copy(), ())
    evaluator = LevelEvaluator([segment], strategy, Direction.LONG, CostModel(0.0), 0.5, 0.0)
    params = {
        **EXITS,
        "stop_loss_pct": math.nan,
        "take_profit_pct": math.nan,
        "position_size_pct": 1.0,
    }
    effect = delayed_signal_effect(evaluator, params, Period.ALL).as_dict()
    assert effect["original"]["total_return_pct"] == pytest.approx(200 / 101 / 100, rel=1e-12)
    assert effect["delayed_one_bar"]["total_return_pct"] == pytest.approx(
        200 / 102 / 100, rel=1e-12
    )
    assert effect["change"]["total_return_pct"] == pytest.approx(
        (200 / 102 - 200 / 101) / 100, rel=1e-9
    )
    assert effect["original"]["n_trades"] == effect["delayed_one_bar"]["n_trades"] == 1
    # A single winning trade each: profit factor inf on both sides, so no finite change.
    assert effect["original"]["profit_factor"] == math.inf
    assert effect["change"]["profit_factor"] is None
