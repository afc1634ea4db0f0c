"""Evaluate parameter sets of a level over its segments and periods, in batches.

All segments of a level are laid out back to back once, so a batch of trials is one call of the
numba engine (``engine.evaluate_batch``), parallel over trials. Signals are computed on the whole
segment (so indicators are warm at the start of validation and test), once per distinct set of
strategy parameters; indicators are computed once per distinct window (``IndicatorCache``). The
vectorbt reference (``runs``) stays available for the full analysis of a chosen parameter set.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import polars as pl

from ffe_dagster.core.backtest import engine
from ffe_dagster.core.backtest.metrics import FloatArray, Metrics
from ffe_dagster.core.backtest.reference import (
    INIT_CASH,
    BacktestRun,
    CostModel,
    Direction,
    Segment,
    StopMode,
    TradeParams,
    backtest_run,
    engine_row,
    pool_metrics,
    run_backtest,
    simulate,
)
from ffe_dagster.core.backtest.strategies import EntryStrategy, IndicatorCache, Signals
from ffe_dagster.core.study.level_specs import split_bounds

ParamValue = float | int | str
Params = Mapping[str, ParamValue]
MIN_PERIOD_BARS = 2


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


def _floats(params: Params) -> Mapping[str, float]:
    return {k: float(v) for k, v in params.items() if not isinstance(v, str)}


@dataclass(frozen=True, slots=True)
class PeriodLayout:
    """Where one period lies in the concatenated bars: ``[lo, hi)`` rows and their segments.

    ``periods_per_year`` is the bar-weighted mean of the segments' own bars per year: a pooled
    Sharpe over instruments is the per-bar Sharpe of all their bars taken together, annualized
    with each instrument's factor weighted by the bars it contributes.
    """

    bounds: np.ndarray  # int64, shape (k, 2)
    segment_index: tuple[int, ...]
    periods_per_year: float
    bars: int


class LevelEvaluator:
    """Backtests parameter sets of one level; holds the indicator and signal caches of a study."""

    def __init__(
        self,
        segments: Sequence[Segment],
        strategy: EntryStrategy,
        direction: Direction,
        costs: CostModel,
        train_fraction: float,
        validation_fraction: float,
    ) -> None:
        if not segments:
            raise ValueError("a level needs at least one segment of bars to evaluate")
        self.segments = tuple(segments)
        self.strategy = strategy
        self.direction = direction
        self.costs = costs
        self.train_fraction = train_fraction
        self.validation_fraction = validation_fraction
        self._offsets = np.cumsum([0, *(len(s) for s in self.segments)])
        self._open = np.concatenate([s.open for s in self.segments])
        self._high = np.concatenate([s.high for s in self.segments])
        self._low = np.concatenate([s.low for s in self.segments])
        self._close = np.concatenate([s.close for s in self.segments])
        self._indicators = [IndicatorCache(s) for s in self.segments]
        self._signals: dict[tuple[float, ...], Signals] = {}
        self._layouts = {p: self._layout(p) for p in Period}

    def _bounds(self, n: int, period: Period) -> tuple[int, int]:
        a, b = split_bounds(n, self.train_fraction, self.validation_fraction)
        return {
            Period.TRAIN: (0, a),
            Period.VALIDATION: (a, b),
            Period.TEST: (b, n),
            Period.ALL: (0, n),
        }[period]

    def _layout(self, period: Period) -> PeriodLayout:
        rows: list[tuple[int, int]] = []
        index: list[int] = []
        weights: list[float] = []
        ppy: list[float] = []
        for i, segment in enumerate(self.segments):
            lo, hi = self._bounds(len(segment), period)
            if hi - lo < MIN_PERIOD_BARS:
                continue
            base = int(self._offsets[i])
            rows.append((base + lo, base + hi))
            index.append(i)
            weights.append(float(hi - lo))
            ppy.append(segment.periods_per_year)
        bounds = np.array(rows, dtype=np.int64).reshape(-1, 2)
        return PeriodLayout(
            bounds=bounds,
            segment_index=tuple(index),
            periods_per_year=float(np.average(ppy, weights=weights)) if rows else 0.0,
            bars=int(sum(weights)),
        )

    def signal_key(self, params: Params) -> tuple[float, ...]:
        """The strategy part of ``params``: trials with the same key share their signals."""
        return tuple(float(params[n]) for n in self.strategy.param_names)

    def signals(self, params: Params) -> Signals:
        """Signals of ``params`` over all segments back to back (cached per strategy key)."""
        key = self.signal_key(params)
        found = self._signals.get(key)
        if found is None:
            values = _floats(params)
            found = np.concatenate(
                [self.strategy.signals(cache, values) for cache in self._indicators]
            )
            self._signals[key] = found
        return found

    def layout(self, period: Period) -> PeriodLayout:
        """Where ``period`` lies in the concatenated bars."""
        return self._layouts[period]

    def evaluate_many(
        self,
        batch: Sequence[Params],
        period: Period,
        costs: Sequence[CostModel] | None = None,
    ) -> list[Metrics]:
        """Pooled metrics of each parameter set over every segment's ``period``, in one engine
        call; ``costs`` (one per set) replaces the level's cost model."""
        if not batch:
            return []
        stats = self.batch_stats(batch, period, costs)
        ppy = self._layouts[period].periods_per_year
        return [engine.stats_to_metrics(row, ppy) for row in stats]

    def batch_stats(
        self,
        batch: Sequence[Params],
        period: Period,
        costs: Sequence[CostModel] | None = None,
    ) -> FloatArray:
        """The engine's statistics rows (``engine.S_*``) of each parameter set."""
        layout = self._layouts[period]
        if layout.bounds.shape[0] == 0:
            raise ValueError(f"no segment has bars in the {period} period")
        if costs is not None and len(costs) != len(batch):
            raise ValueError(f"{len(costs)} cost models for {len(batch)} parameter sets")
        rows: dict[tuple[float, ...], int] = {}
        signal_rows: list[Signals] = []
        matrix = np.empty((len(batch), engine.N_PARAMS), dtype=np.float64)
        for t, params in enumerate(batch):
            key = self.signal_key(params)
            if key not in rows:
                rows[key] = len(signal_rows)
                signal_rows.append(self.signals(params))
            cost = costs[t] if costs is not None else self.costs
            matrix[t] = engine_row(trade_params(params), cost, self.direction, rows[key])
        return engine.evaluate_batch(
            self._open, self._high, self._low, self._close, np.stack(signal_rows),
            layout.bounds, matrix, INIT_CASH,
        )  # fmt: skip

    def evaluate(self, params: Params, period: Period) -> Metrics:
        """Pooled metrics of ``params`` over every segment's ``period``."""
        return self.evaluate_many([params], period)[0]

    def returns(self, params: Params, period: Period) -> FloatArray:
        """Per-bar returns of ``params`` over ``period``, segments back to back (engine)."""
        layout = self._layouts[period]
        signals = self.signals(params)
        row = engine_row(trade_params(params), self.costs, self.direction)
        out = np.empty(layout.bars, dtype=np.float64)
        pos = 0
        no_trades = np.empty((0, engine.N_TRADE_FIELDS), dtype=np.float64)
        for lo, hi in layout.bounds:
            engine.simulate_segment(
                self._open, self._high, self._low, self._close, signals, int(lo), int(hi),
                row, INIT_CASH, engine.new_stats(), no_trades, out[pos : pos + hi - lo],
            )  # fmt: skip
            pos += int(hi - lo)
        return out

    def bar_stamps(self, period: Period) -> tuple[np.ndarray, FloatArray]:
        """Open time and the instrument's bars per year of each row ``returns`` gives."""
        layout = self._layouts[period]
        stamps: list[np.ndarray] = []
        factors: list[FloatArray] = []
        for (lo, hi), i in zip(layout.bounds, layout.segment_index, strict=True):
            base = int(self._offsets[i])
            segment = self.segments[i]
            stamps.append(segment.ts[int(lo) - base : int(hi) - base])
            factors.append(np.full(int(hi - lo), segment.periods_per_year, dtype=np.float64))
        if not stamps:
            raise ValueError(f"no segment has bars in the {period} period")
        return np.concatenate(stamps), np.concatenate(factors)

    def runs(self, params: Params, period: Period) -> list[tuple[Segment, BacktestRun]]:
        """The vectorbt reference: one backtest per segment over ``period`` (full analysis)."""
        out: list[tuple[Segment, BacktestRun]] = []
        tp = trade_params(params)
        layout = self._layouts[period]
        signals = self.signals(params)
        for (lo, hi), i in zip(layout.bounds, layout.segment_index, strict=True):
            base = int(self._offsets[i])
            part = self.segments[i].slice(int(lo) - base, int(hi) - base)
            run = run_backtest(
                part, signals[lo:hi], direction=self.direction, params=tp, costs=self.costs
            )
            out.append((part, run))
        return out

    def full_analysis(self, params: Params, period: Period) -> "FullAnalysis":
        """Re-run ``params`` through vectorbt: trades table, equity curve, and its metrics next to
        the engine's (they must agree; ``max_relative_difference`` says by how much)."""
        tp = trade_params(params)
        layout = self._layouts[period]
        signals = self.signals(params)
        trade_frames: list[pl.DataFrame] = []
        equity_frames: list[pl.DataFrame] = []
        runs: list[BacktestRun] = []
        ppy: list[float] = []
        for (lo, hi), i in zip(layout.bounds, layout.segment_index, strict=True):
            base = int(self._offsets[i])
            part = self.segments[i].slice(int(lo) - base, int(hi) - base)
            portfolio = simulate(
                part, signals[lo:hi], direction=self.direction, params=tp, costs=self.costs
            )
            runs.append(backtest_run(portfolio, len(part)))
            ppy.append(part.periods_per_year)
            records = portfolio.get_trades().records
            trade_frames.append(
                pl.DataFrame(
                    {
                        "instrument": [part.instrument] * len(records),
                        "entry_ts": part.ts[records["entry_idx"]],
                        "exit_ts": part.ts[records["exit_idx"]],
                        "direction": np.where(records["direction"] == 0, "long", "short"),
                        "size": records["size"],
                        "entry_price": records["entry_price"],
                        "exit_price": records["exit_price"],
                        "fees": records["entry_fees"] + records["exit_fees"],
                        "pnl": records["pnl"],
                        "return_pct": records["return"] * 100.0,
                        "closed": records["status"] == 1,
                    }
                )
            )
            value = np.asarray(portfolio.value(), dtype=np.float64)
            peak = np.maximum.accumulate(value)
            equity_frames.append(
                pl.DataFrame(
                    {
                        "instrument": [part.instrument] * len(part),
                        "ts": part.ts,
                        "equity": value,
                        "drawdown_pct": (1.0 - value / peak) * 100.0,
                    }
                )
            )
        if not runs:
            raise ValueError(f"no segment has bars in the {period} period")
        reference = pool_metrics(runs, ppy)
        mine = self.evaluate(params, period)
        diffs = [
            abs(a - b) / max(abs(b), 1e-12)
            for a, b in zip(mine.as_dict().values(), reference.as_dict().values(), strict=True)
            if abs(a - b) > 1e-12
        ]
        return FullAnalysis(
            trades=pl.concat(trade_frames),
            equity=pl.concat(equity_frames),
            metrics=reference,
            engine_metrics=mine,
            max_relative_difference=max(diffs, default=0.0),
        )

    def reference_metrics(self, params: Params, period: Period) -> Metrics:
        """Pooled metrics of ``params`` computed from vectorbt's portfolios."""
        runs = self.runs(params, period)
        if not runs:
            raise ValueError(f"no segment has bars in the {period} period")
        return pool_metrics([r for _, r in runs], [s.periods_per_year for s, _ in runs])


@dataclass(frozen=True, slots=True)
class FullAnalysis:
    """The vectorbt re-run of a chosen parameter set."""

    trades: pl.DataFrame
    equity: pl.DataFrame
    metrics: Metrics
    engine_metrics: Metrics
    max_relative_difference: float


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
    stats = engine.new_stats()
    bars = 0
    ppy_sum = 0.0
    row = engine_row(trade_params(params), costs, direction)
    no_trades = np.empty((0, engine.N_TRADE_FIELDS), dtype=np.float64)
    no_returns = np.empty(0, dtype=np.float64)
    for segment in segments:
        cutoff = segment.ts[-1] - np.timedelta64(days, "D")
        lo = int((segment.ts <= cutoff).sum())
        n = len(segment)
        if n - lo < MIN_PERIOD_BARS:
            continue
        signals = strategy.signals_for(segment, _floats(params))
        engine.simulate_segment(
            segment.open, segment.high, segment.low, segment.close, signals, lo, n,
            row, INIT_CASH, stats, no_trades, no_returns,
        )  # fmt: skip
        bars += n - lo
        ppy_sum += segment.periods_per_year * (n - lo)
    if not bars:
        raise ValueError(f"no segment has bars in the last {days} days")
    return engine.stats_to_metrics(stats, ppy_sum / bars)
