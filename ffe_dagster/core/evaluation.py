"""Evaluate one parameter set of a level over its segments and periods.

Signals are computed on the whole segment (so indicators are warm at the start of validation and
test) and cached per distinct set of strategy parameters: trials that differ only in their exit
parameters reuse them.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from ffe_dagster.core.backtest import (
    BacktestRun,
    CostModel,
    Direction,
    Segment,
    StopMode,
    TradeParams,
    pool_metrics,
    run_backtest,
)
from ffe_dagster.core.curriculum import split_bounds
from ffe_dagster.core.metrics import Metrics
from ffe_dagster.core.strategies import EntryStrategy, Signals

ParamValue = float | int | str
Params = Mapping[str, ParamValue]


class Period(StrEnum):
    """Which slice of every segment a backtest covers."""

    TRAIN = "train"
    VALIDATION = "validation"
    TEST = "test"
    ALL = "all"


def trade_params(params: Params) -> TradeParams:
    """The exit and risk part of a parameter set."""
    return TradeParams(
        stop_loss_pct=float(params["stop_loss_pct"]),
        take_profit_pct=float(params["take_profit_pct"]),
        position_size_pct=float(params["position_size_pct"]),
        trailing_stop_pct=float(params["trailing_stop_pct"]),
        stop_mode=StopMode(str(params.get("stop_mode", StopMode.FIXED))),
    )


@dataclass
class LevelEvaluator:
    """Backtests parameter sets of one level; holds the signal cache of one study."""

    segments: Sequence[Segment]
    strategy: EntryStrategy
    direction: Direction
    costs: CostModel
    train_fraction: float
    validation_fraction: float

    def __post_init__(self) -> None:
        if not self.segments:
            raise ValueError("a level needs at least one segment of bars to evaluate")
        self._signal_cache: dict[tuple[int, tuple[float, ...]], Signals] = {}

    def _signals(self, index: int, params: Params) -> Signals:
        key = (index, tuple(float(params[n]) for n in self.strategy.param_names))
        cached = self._signal_cache.get(key)
        if cached is None:
            cached = self.strategy.signals(self.segments[index].close, _floats(params))
            self._signal_cache[key] = cached
        return cached

    def _bounds(self, n: int, period: Period) -> tuple[int, int]:
        a, b = split_bounds(n, self.train_fraction, self.validation_fraction)
        return {
            Period.TRAIN: (0, a),
            Period.VALIDATION: (a, b),
            Period.TEST: (b, n),
            Period.ALL: (0, n),
        }[period]

    def runs(self, params: Params, period: Period) -> list[tuple[Segment, BacktestRun]]:
        """One backtest per segment over ``period``, with the segment slice it covered."""
        out: list[tuple[Segment, BacktestRun]] = []
        tp = trade_params(params)
        for i, segment in enumerate(self.segments):
            lo, hi = self._bounds(len(segment), period)
            if hi - lo < 2:
                continue
            part = segment.slice(lo, hi)
            signals = self._signals(i, params)[lo:hi]
            run = run_backtest(part, signals, direction=self.direction, params=tp, costs=self.costs)
            out.append((part, run))
        return out

    def evaluate(self, params: Params, period: Period) -> Metrics:
        """Pooled metrics of ``params`` over every segment's ``period``."""
        runs = self.runs(params, period)
        if not runs:
            raise ValueError(f"no segment has bars in the {period} period")
        return pool_metrics([r for _, r in runs], [s.periods_per_year for s, _ in runs])


def _floats(params: Params) -> Mapping[str, float]:
    return {k: float(v) for k, v in params.items() if not isinstance(v, str)}


def evaluate_recent(
    segments: Sequence[Segment],
    params: Params,
    *,
    strategy: EntryStrategy,
    direction: Direction,
    costs: CostModel,
    days: int,
) -> Metrics:
    """Backtest ``params`` on the last ``days`` days of each segment.

    Signals are computed on the whole segment, so indicators are warm when the window opens; only
    the window's bars are traded and measured.
    """
    runs: list[BacktestRun] = []
    periods: list[float] = []
    tp = trade_params(params)
    for segment in segments:
        cutoff = segment.ts[-1] - np.timedelta64(days, "D")
        lo = int((segment.ts <= cutoff).sum())
        if segment.close.size - lo < 2:
            continue
        signals = strategy.signals(segment.close, _floats(params))[lo:]
        runs.append(
            run_backtest(
                segment.slice(lo, segment.close.size),
                signals,
                direction=direction,
                params=tp,
                costs=costs,
            )
        )
        periods.append(segment.periods_per_year)
    if not runs:
        raise ValueError(f"no segment has bars in the last {days} days")
    return pool_metrics(runs, periods)
