"""The numba engine equals vectorbt's ``Portfolio.from_signals`` on real bars.

For every direction, with fixed stops, trailing stops and no stops, the engine's trades (bars,
prices, fees, PnL) and per-bar returns are compared with vectorbt's own records, and its metrics
with metrics computed independently from vectorbt's returns and trades, and with vectorbt's own
returns statistics. The bars are the bundled real BTC/USDT hours of 2022 (the crash: both
directions trade and stops fire).
"""

import math
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ffe_dagster.config.settings import PACKAGE_DIR
from ffe_dagster.core.backtest import engine
from ffe_dagster.core.backtest.reference import (
    CostModel,
    Direction,
    Segment,
    StopMode,
    TradeParams,
    pool_metrics,
    run_backtest,
    run_engine,
    simulate,
)
from ffe_dagster.core.backtest.strategies import get_strategy
from ffe_dagster.core.study.evaluation import LevelEvaluator, Period

RTOL = 1e-9
PPY = 24 * 365.0
COSTS = CostModel(fee_pct=0.1, slippage_pct=0.05)


def _segment(symbol: str, start: datetime, end: datetime) -> Segment:
    frame = pl.read_parquet(PACKAGE_DIR / "data" / "samples" / f"{symbol}_1h.parquet").filter(
        (pl.col("ts") >= start) & (pl.col("ts") < end)
    )
    return Segment(
        instrument=symbol,
        ts=frame["ts"].dt.replace_time_zone(None).to_numpy(),
        open=frame["open"].to_numpy(),
        high=frame["high"].to_numpy(),
        low=frame["low"].to_numpy(),
        close=frame["close"].to_numpy(),
        periods_per_year=PPY,
    )


@pytest.fixture(scope="module")
def btc_2022() -> Segment:
    return _segment("BTC_USDT", datetime(2022, 1, 1, tzinfo=UTC), datetime(2023, 1, 1, tzinfo=UTC))


CASES = {
    "fixed stops": TradeParams(2.0, 4.0, 2.0, 1.5, StopMode.FIXED),
    "trailing stop": TradeParams(2.0, 4.0, 3.0, 1.5, StopMode.TRAILING),
    "no stops": TradeParams(math.nan, math.nan, 1.0, 1.5, StopMode.FIXED),
}


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-12)


@pytest.mark.parametrize("direction", list(Direction))
@pytest.mark.parametrize("case", list(CASES))
def test_engine_equals_vectorbt_trades_returns_and_metrics(
    btc_2022: Segment, direction: Direction, case: str
) -> None:
    params = CASES[case]
    signals = get_strategy("sma_crossover").signals_for(
        btc_2022, {"fast_window": 12, "slow_window": 48}
    )
    mine = run_engine(btc_2022, signals, direction=direction, params=params, costs=COSTS)
    portfolio = simulate(btc_2022, signals, direction=direction, params=params, costs=COSTS)
    ref = portfolio.get_trades().records

    assert len(mine.trades) == len(ref) > 20
    np.testing.assert_array_equal(mine.trades[:, engine.T_ENTRY_IDX], ref["entry_idx"])
    np.testing.assert_array_equal(mine.trades[:, engine.T_EXIT_IDX], ref["exit_idx"])
    np.testing.assert_array_equal(mine.trades[:, engine.T_CLOSED], ref["status"] == 1)
    np.testing.assert_array_equal(mine.trades[:, engine.T_DIRECTION], ref["direction"])
    for mine_col, ref_col in [
        (engine.T_SIZE, "size"),
        (engine.T_ENTRY_PRICE, "entry_price"),
        (engine.T_EXIT_PRICE, "exit_price"),
        (engine.T_ENTRY_FEES, "entry_fees"),
        (engine.T_EXIT_FEES, "exit_fees"),
        (engine.T_PNL, "pnl"),
    ]:
        np.testing.assert_allclose(mine.trades[:, mine_col], ref[ref_col], rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(mine.returns, portfolio.returns().to_numpy(), rtol=RTOL, atol=1e-15)

    # Metrics: the engine's streamed ones against ones computed from vectorbt's outputs.
    expected = pool_metrics(
        [run_backtest(btc_2022, signals, direction=direction, params=params, costs=COSTS)], [PPY]
    )
    got = mine.metrics(PPY)
    for name, value in expected.as_dict().items():
        assert _close(got.as_dict()[name], value), (name, got.as_dict()[name], value)

    # ... and against vectorbt's own statistics where its definitions are the same as ours.
    stats = portfolio.returns().vbt.returns(freq="1h", year_freq="365 days")
    assert _close(got.sharpe, float(stats.sharpe_ratio()))
    assert _close(got.sortino, float(stats.sortino_ratio()))
    assert _close(got.max_drawdown_pct, -float(stats.max_drawdown()) * 100)
    assert _close(got.total_return_pct, float(portfolio.total_return()) * 100)
    closed = portfolio.get_trades().closed
    assert _close(got.win_rate_pct, float(closed.win_rate()) * 100)
    assert got.n_trades == closed.count()


def test_stops_really_fire_in_the_comparison(btc_2022: Segment) -> None:
    """Exits on bars without an opposite signal can only be stop or take-profit fills."""
    signals = get_strategy("sma_crossover").signals_for(
        btc_2022, {"fast_window": 12, "slow_window": 48}
    )
    run = run_engine(
        btc_2022, signals, direction=Direction.LONG, params=CASES["fixed stops"], costs=COSTS
    )
    closed = run.trades[run.trades[:, engine.T_CLOSED] == 1.0]
    exit_bars = closed[:, engine.T_EXIT_IDX].astype(int)
    assert (signals[exit_bars] != -1).sum() > 5
    # A stop fill price differs from the bar's close (it is the stop level or the open).
    stop_exits = closed[signals[exit_bars] != -1]
    stop_closes = btc_2022.close[stop_exits[:, engine.T_EXIT_IDX].astype(int)]
    assert np.all(stop_exits[:, engine.T_EXIT_PRICE] != stop_closes * (1 - 0.0005))


def test_batch_over_segments_equals_the_reference_per_trial() -> None:
    """A batch over two instruments and the train period equals vectorbt, trial by trial."""
    segments = [
        _segment(s, datetime(2023, 1, 1, tzinfo=UTC), datetime(2023, 7, 1, tzinfo=UTC))
        for s in ("BTC_USDT", "ETH_USDT")
    ]
    evaluator = LevelEvaluator(
        segments, get_strategy("donchian_breakout"), Direction.BOTH, COSTS, 0.6, 0.2
    )
    rng = np.random.default_rng(3)
    batch = [
        {
            "stop_loss_pct": float(rng.uniform(0.5, 5.0)),
            "take_profit_pct": float(rng.uniform(0.5, 10.0)),
            "position_size_pct": float(rng.uniform(1.0, 3.0)),
            "trailing_stop_pct": float(rng.uniform(1.0, 4.0)),
            "stop_mode": str(rng.choice(["fixed", "trailing"])),
            "channel_window": int(rng.choice([20, 30, 55])),
        }
        for _ in range(6)
    ]
    got = evaluator.evaluate_many(batch, Period.TRAIN)
    for params, metrics in zip(batch, got, strict=True):
        expected = evaluator.reference_metrics(params, Period.TRAIN)
        for name, value in expected.as_dict().items():
            assert _close(metrics.as_dict()[name], value), (name, params)
    # Indicators and signals were computed once per distinct window, not per trial.
    distinct = {p["channel_window"] for p in batch}
    assert len(evaluator._signals) == len(distinct)


def test_returns_of_a_period_match_the_reference(btc_2022: Segment) -> None:
    evaluator = LevelEvaluator(
        [btc_2022], get_strategy("sma_crossover"), Direction.SHORT, COSTS, 0.6, 0.2
    )
    params = {
        "stop_loss_pct": 3.0,
        "take_profit_pct": 6.0,
        "position_size_pct": 2.0,
        "trailing_stop_pct": 2.0,
        "stop_mode": "fixed",
        "fast_window": 10,
        "slow_window": 30,
    }
    (_, reference), *_ = evaluator.runs(params, Period.VALIDATION)
    np.testing.assert_allclose(
        evaluator.returns(params, Period.VALIDATION), reference.returns, rtol=RTOL, atol=1e-15
    )


CACHE_SCRIPT = """
import numpy as np
from ffe_dagster.core.backtest import engine
bars = np.linspace(100.0, 110.0, 50)
signals = np.zeros((1, 50), dtype=np.int8)
signals[0, 3] = 1
params = np.zeros((1, engine.N_PARAMS))
params[0, engine.P_SIZE_VALUE] = 100.0
params[0, engine.P_SL] = np.nan
params[0, engine.P_TP] = np.nan
bounds = np.array([[0, 50]], dtype=np.int64)
engine.evaluate_batch(bars, bars, bars, bars, signals, bounds, params, 10_000.0)
print(sum(engine.evaluate_batch.stats.cache_hits.values()),
      sum(engine.evaluate_batch.stats.cache_misses.values()))
"""


def test_a_second_process_loads_the_compiled_kernel_from_disk(tmp_path: Path) -> None:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}

    def run() -> tuple[int, int]:
        out = subprocess.run(
            [sys.executable, "-c", CACHE_SCRIPT], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        hits, misses = out.stdout.split()
        return int(hits), int(misses)

    assert run() == (0, 1)  # first process: compiled and written to the cache
    assert run() == (1, 0)  # second process: loaded, not compiled
