"""Fill ``NUMBA_CACHE_DIR`` before the test workers start (``make test`` runs this beside the
static checks).

On a fresh clone the cache is empty, so every pytest-xdist worker compiled the same kernels at
once, each on its own core: vectorbt's ``Portfolio.from_signals`` and its statistics, the
engine's batch and segment kernels, the strategies' indicators (about 60 s of CPU per worker
on 2 cores). Compiled here once, while pyright leaves a core idle, the workers load them from
disk. Nothing is asserted: the tests check the results; this only runs the same calls with the
same argument types on a short slice of the bundled bars.

Run as ``python -m tests.warm_numba``.
"""

import math
from datetime import UTC, datetime

import numpy as np
import polars as pl

from ffe_dagster.config.settings import PACKAGE_DIR
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

PPY = 24 * 365.0
COSTS = CostModel(fee_pct=0.1, slippage_pct=0.05)
PARAMS = (
    TradeParams(2.0, 4.0, 2.0, 1.5, StopMode.FIXED),
    TradeParams(2.0, 4.0, 3.0, 1.5, StopMode.TRAILING),
    TradeParams(math.nan, math.nan, 1.0, 1.5, StopMode.FIXED),
)
STRATEGY_PARAMS = {
    "sma_crossover": {"fast_window": 12, "slow_window": 48},
    "donchian_breakout": {"channel_window": 20},
    "rsi_reversion": {"rsi_period": 14, "rsi_lower": 30, "rsi_upper": 70},
}


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


def _reference_and_engine(segment: Segment) -> None:
    signals = get_strategy("sma_crossover").signals_for(segment, STRATEGY_PARAMS["sma_crossover"])
    for direction in Direction:
        for params in PARAMS:
            run_engine(segment, signals, direction=direction, params=params, costs=COSTS)
            portfolio = simulate(segment, signals, direction=direction, params=params, costs=COSTS)
            _ = portfolio.get_trades().records  # the property compiles the records
            stats = portfolio.returns().vbt.returns(freq="1h", year_freq="365 days")
            _ = (stats.sharpe_ratio(), stats.sortino_ratio(), stats.max_drawdown())
            _ = (portfolio.total_return(), portfolio.get_trades().closed.win_rate())
            run = run_backtest(segment, signals, direction=direction, params=params, costs=COSTS)
            pool_metrics([run], [PPY])


def _batch(segments: list[Segment]) -> None:
    for name, extra in STRATEGY_PARAMS.items():
        evaluator = LevelEvaluator(segments, get_strategy(name), Direction.BOTH, COSTS, 0.6, 0.2)
        rng = np.random.default_rng(3)
        batch = [
            {
                "stop_loss_pct": float(rng.uniform(0.5, 5.0)),
                "take_profit_pct": float(rng.uniform(0.5, 10.0)),
                "position_size_pct": float(rng.uniform(1.0, 3.0)),
                "trailing_stop_pct": float(rng.uniform(1.0, 4.0)),
                "stop_mode": mode,
                **extra,
            }
            for mode in ("fixed", "trailing")
        ]
        evaluator.evaluate_many(batch, Period.TRAIN)
        evaluator.reference_metrics(batch[0], Period.TRAIN)


def main() -> None:
    """Compile (or load) every kernel the tests call, with the tests' argument types."""
    start, end = datetime(2022, 1, 1, tzinfo=UTC), datetime(2022, 3, 1, tzinfo=UTC)
    _reference_and_engine(_segment("BTC_USDT", start, end))
    _batch([_segment(s, start, end) for s in ("BTC_USDT", "ETH_USDT")])
    print("numba cache warm")


if __name__ == "__main__":
    main()
