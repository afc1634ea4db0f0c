"""``python -m ffe_dagster.kernel_warmup``: compile the backtest's numba kernels at install.

The engine (``core/backtest/engine.py``, ``strategies.py``, ``vbt_compat.py``) and vectorbt's
kernels behind the reference check (``core/backtest/reference.py``) are numba functions with
``cache=True``: the first process on a machine compiles them, which on 2 cores is about a minute
of a fresh clone's first cycle, and every later process loads the machine code from
``NUMBA_CACHE_DIR``. ``make setup`` runs this module once after installing the packages, as it
compiles Python's bytecode, so the first ``make run`` starts with the kernels ready; the
Makefile runs it again when a kernel's source changes (numba would recompile then anyway).

It drives the real code path (``LevelEvaluator``: the batch engine, the per-trial returns and the
vectorbt cross-check) for every built-in entry strategy and direction, with both stop modes, on
a small synthetic random walk, so every argument type the cycle passes gets compiled. The bars
and results are thrown away: nothing here is stored but numba's cache.
"""

import argparse
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from ffe_dagster.core.backtest.reference import CostModel, Direction, Segment
from ffe_dagster.core.backtest.strategies import get_strategy
from ffe_dagster.core.study.evaluation import LevelEvaluator, Params, Period
from ffe_dagster.core.study.level_specs import bars_to_segment

# One knob set per built-in strategy, inside the curriculum's ranges; the values only need to
# make the strategy trade a few times on the synthetic bars.
STRATEGY_PARAMS: dict[str, dict[str, float | int]] = {
    "sma_crossover": {"fast_window": 5, "slow_window": 20},
    "donchian_breakout": {"channel_window": 20},
    "rsi_reversion": {"rsi_period": 14, "rsi_lower": 30, "rsi_upper": 70},
}
BARS = 600
HOURLY = 24 * 365.0


@dataclass(frozen=True, slots=True)
class WarmupReport:
    """What the warm-up ran and how long it took."""

    strategies: tuple[str, ...]
    evaluations: int
    seconds: float


def synthetic_segment(n_bars: int = BARS, seed: int = 7) -> Segment:
    """A geometric random walk of hourly OHLC bars, volatile enough to hit stops and targets."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n_bars)))
    open_ = np.concatenate(([close[0]], close[:-1]))
    spread = np.abs(rng.normal(0.0, 0.004, n_bars)) * close
    start = datetime(2024, 1, 1, tzinfo=UTC)
    bars = pl.DataFrame(
        {
            "ts": pl.datetime_range(
                start, start + timedelta(hours=n_bars - 1), "1h", eager=True, time_zone="UTC"
            ),
            "open": open_,
            "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread,
            "close": close,
        }
    )
    # Built as the cycle builds its segments, so the kernels see the same array types.
    return bars_to_segment(bars, "WARMUP", HOURLY)


def _param_sets(strategy: str) -> list[Params]:
    exits: Params = {
        "stop_loss_pct": 1.5,
        "take_profit_pct": 3.0,
        "position_size_pct": 2.0,
        "trailing_stop_pct": 1.5,
    }
    return [
        {**exits, **STRATEGY_PARAMS[strategy], "stop_mode": mode} for mode in ("fixed", "trailing")
    ]


def warm_up() -> WarmupReport:
    """Run every kernel the cycle runs once, so numba compiles (or loads) each into its cache."""
    started = time.perf_counter()
    segments = [synthetic_segment(seed=7), synthetic_segment(seed=8)]
    evaluations = 0
    for name in STRATEGY_PARAMS:
        strategy = get_strategy(name)
        batch = _param_sets(name)
        for direction in Direction:
            evaluator = LevelEvaluator(segments, strategy, direction, CostModel(), 0.6, 0.2)
            evaluator.evaluate_many(batch, Period.TRAIN)
            evaluator.returns(batch[0], Period.TEST)
            for params in batch:
                evaluator.full_analysis(params, Period.ALL)
            evaluations += len(batch)
    return WarmupReport(tuple(STRATEGY_PARAMS), evaluations, time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    """Compile the kernels and say where they went and how long it took."""
    parser = argparse.ArgumentParser(
        description="Compile the backtest's numba kernels into numba's cache (make setup runs it)."
    )
    parser.parse_args(argv)
    cache = os.environ.get("NUMBA_CACHE_DIR", "numba's default (__pycache__ beside the sources)")
    report = warm_up()
    print(
        f"numba kernels ready in {cache}: {len(report.strategies)} strategies x "
        f"{len(Direction)} directions, {report.evaluations} parameter sets, "
        f"{report.seconds:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
