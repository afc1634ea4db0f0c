"""Backtests: vectorbt as the reference, the numba engine for the optimizer's inner loop.

Execution model (vectorbt ``Portfolio.from_signals``): an entry fills at the close of the signal
bar; stop loss, trailing stop and take profit are checked from the next bar on against its high and
low and fill at the stop price (or at the open when the bar gaps through it); fees and slippage
apply per side. Each position is worth ``position_size_pct`` of the starting equity: a fixed
notional, because vectorbt's percent-of-cash sizing cannot reverse a position in ``BOTH`` mode.
A stop loss or take profit of NaN percent is switched off.

``run_engine`` runs the same model through ``core.backtest.engine`` (equal to vectorbt, far
cheaper);
``run_backtest`` keeps vectorbt for the full analysis of a chosen parameter set.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ffe_dagster.core.backtest import engine
from ffe_dagster.core.backtest.metrics import FloatArray, Metrics, compute_metrics
from ffe_dagster.core.backtest.strategies import Signals

INIT_CASH = 10_000.0


class Direction(StrEnum):
    """Which side a level may trade."""

    LONG = "long"
    SHORT = "short"
    BOTH = "both"


class StopMode(StrEnum):
    """Whether the stop loss is fixed at entry or trails the best price since entry."""

    FIXED = "fixed"
    TRAILING = "trailing"


@dataclass(frozen=True, slots=True)
class TradeParams:
    """Exit and risk parameters, in percent as the user states them."""

    stop_loss_pct: float
    take_profit_pct: float
    position_size_pct: float
    trailing_stop_pct: float
    stop_mode: StopMode = StopMode.FIXED


@dataclass(frozen=True, slots=True)
class CostModel:
    """Trading costs per side, in percent of the traded notional."""

    fee_pct: float = 0.1
    slippage_pct: float = 0.0


@dataclass(frozen=True, slots=True)
class Segment:
    """A contiguous run of bars of one instrument, as numpy arrays for the backtester."""

    instrument: str
    ts: npt.NDArray[np.datetime64]
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    periods_per_year: float

    def __len__(self) -> int:
        return int(self.close.size)

    def slice(self, start: int, stop: int) -> "Segment":
        """The bars ``[start, stop)`` of this segment."""
        return Segment(
            instrument=self.instrument,
            ts=self.ts[start:stop],
            open=self.open[start:stop],
            high=self.high[start:stop],
            low=self.low[start:stop],
            close=self.close[start:stop],
            periods_per_year=self.periods_per_year,
        )


@dataclass(frozen=True, slots=True)
class BacktestRun:
    """The raw outcome of one backtest: per-bar returns and closed trades."""

    returns: FloatArray
    pnl: FloatArray
    trade_bars: FloatArray
    bars_in_market: int
    equity: FloatArray


ENGINE_DIRECTION = {
    Direction.LONG: engine.DIR_LONG,
    Direction.SHORT: engine.DIR_SHORT,
    Direction.BOTH: engine.DIR_BOTH,
}


def stop_fraction(params: TradeParams) -> float:
    """The stop as a fraction: the trailing stop in trailing mode, else the fixed stop loss."""
    trailing = params.stop_mode is StopMode.TRAILING
    return (params.trailing_stop_pct if trailing else params.stop_loss_pct) / 100.0


def engine_row(
    params: TradeParams, costs: CostModel, direction: Direction, signal_row: int = 0
) -> FloatArray:
    """One row of the engine's parameter matrix (see ``engine.P_*``)."""
    row = np.empty(engine.N_PARAMS, dtype=np.float64)
    row[engine.P_SIZE_VALUE] = params.position_size_pct / 100.0 * INIT_CASH
    row[engine.P_SL] = stop_fraction(params)
    row[engine.P_TRAIL] = 1.0 if params.stop_mode is StopMode.TRAILING else 0.0
    row[engine.P_TP] = params.take_profit_pct / 100.0
    row[engine.P_DIRECTION] = ENGINE_DIRECTION[direction]
    row[engine.P_FEES] = costs.fee_pct / 100.0
    row[engine.P_SLIPPAGE] = costs.slippage_pct / 100.0
    row[engine.P_SIGNAL_ROW] = signal_row
    return row


@dataclass(frozen=True, slots=True)
class EngineRun:
    """One segment through the engine: its statistics row, trades and per-bar returns."""

    stats: FloatArray
    trades: FloatArray  # one row per trade, ``engine.T_*`` columns
    returns: FloatArray

    def metrics(self, periods_per_year: float) -> Metrics:
        """The run's metrics."""
        return engine.stats_to_metrics(self.stats, periods_per_year)


def run_engine(
    segment: Segment,
    signals: Signals,
    *,
    direction: Direction,
    params: TradeParams,
    costs: CostModel,
) -> EngineRun:
    """Backtest one segment with the numba engine, recording trades and returns."""
    if signals.shape != segment.close.shape:
        raise ValueError(
            f"signals have {signals.shape[0]} bars, segment {segment.instrument} has {len(segment)}"
        )
    n = len(segment)
    stats = engine.new_stats()
    trades = np.zeros((n + 1, engine.N_TRADE_FIELDS), dtype=np.float64)
    returns = np.zeros(n, dtype=np.float64)
    count = engine.simulate_segment(
        segment.open, segment.high, segment.low, segment.close, signals, 0, n,
        engine_row(params, costs, direction), INIT_CASH, stats, trades, returns,
    )  # fmt: skip
    return EngineRun(stats=stats, trades=trades[:count].copy(), returns=returns)


def _signal_masks(signals: Signals, direction: Direction) -> dict[str, npt.NDArray[np.bool_]]:
    up = signals == 1
    down = signals == -1
    none = np.zeros(signals.shape, dtype=bool)
    if direction is Direction.LONG:
        return {"entries": up, "exits": down, "short_entries": none, "short_exits": none}
    if direction is Direction.SHORT:
        return {"entries": none, "exits": none, "short_entries": down, "short_exits": up}
    return {"entries": up, "exits": none, "short_entries": down, "short_exits": none}


def simulate(
    segment: Segment,
    signals: Signals,
    *,
    direction: Direction,
    params: TradeParams,
    costs: CostModel,
) -> Any:
    """Run vectorbt's ``Portfolio.from_signals`` for one segment and parameter set.

    vectorbt is imported here, not at module load: it takes seconds to import and only the
    reference path needs it. Its simulation kernel is compiled through numba's cache
    (``cached_from_signals_kernel``).
    """
    import vectorbt as vbt

    cached_from_signals_kernel()
    if signals.shape != segment.close.shape:
        raise ValueError(
            f"signals have {signals.shape[0]} bars, segment {segment.instrument} has {len(segment)}"
        )
    masks = _signal_masks(signals, direction)
    return vbt.Portfolio.from_signals(
        pd.Series(segment.close),
        entries=pd.Series(masks["entries"]),
        exits=pd.Series(masks["exits"]),
        short_entries=pd.Series(masks["short_entries"]),
        short_exits=pd.Series(masks["short_exits"]),
        open=pd.Series(segment.open),
        high=pd.Series(segment.high),
        low=pd.Series(segment.low),
        sl_stop=stop_fraction(params),
        sl_trail=params.stop_mode is StopMode.TRAILING,
        tp_stop=params.take_profit_pct / 100.0,
        size=params.position_size_pct / 100.0 * INIT_CASH,
        size_type="value",
        upon_opposite_entry="reverse",
        stop_exit_price="stopmarket",
        fees=costs.fee_pct / 100.0,
        slippage=costs.slippage_pct / 100.0,
        init_cash=INIT_CASH,
    )


def cached_from_signals_kernel() -> None:
    """Make vectorbt's ``simulate_from_signals_nb`` a numba function with ``cache=True``.

    vectorbt 1.2 declares that kernel (what ``Portfolio.from_signals`` runs) with a plain
    ``@njit``, unlike the record, returns and value kernels it calls next, so every process
    compiled it again on its first cross-check: about 10 s of CPU on the 2-core machine, paid
    once by every process that checks a chosen set (each ``make run``, each step process of a
    multiprocess executor). The same Python function compiled once more with ``cache=True``
    gives the same machine code, stored in numba's cache (``NUMBA_CACHE_DIR``, as the engine's
    own kernels are) and loaded in well under a second by the next process
    (``tests/core/test_reference_cache.py`` checks that it is cached, that a new dispatcher
    loads it from there, and the hand-worked trade it gives). Idempotent: a kernel that
    already caches is left as it is. ``vectorbt.portfolio.dispatch`` imports the kernel from
    its module at each call, so replacing the module attribute is all it takes.
    """
    import numba
    from numba.core.caching import NullCache
    from vectorbt.portfolio import nb as vbt_nb

    kernel = vbt_nb.simulate_from_signals_nb
    if isinstance(getattr(kernel, "_cache", None), NullCache):
        vbt_nb.simulate_from_signals_nb = numba.njit(cache=True)(kernel.py_func)


def run_backtest(
    segment: Segment,
    signals: Signals,
    *,
    direction: Direction,
    params: TradeParams,
    costs: CostModel,
) -> BacktestRun:
    """Backtest one segment on vectorbt and return its per-bar returns and closed trades."""
    portfolio = simulate(segment, signals, direction=direction, params=params, costs=costs)
    return backtest_run(portfolio, len(segment))


def backtest_run(portfolio: Any, n_bars: int) -> BacktestRun:
    """The ``BacktestRun`` of a vectorbt portfolio over ``n_bars`` bars."""
    trades = portfolio.get_trades().records
    closed = trades[trades["status"] == 1]
    durations = (closed["exit_idx"] - closed["entry_idx"]).astype(np.float64)
    all_bars = np.where(trades["status"] == 1, trades["exit_idx"], n_bars - 1) - trades["entry_idx"]
    return BacktestRun(
        returns=np.asarray(portfolio.returns(), dtype=np.float64),
        pnl=np.asarray(closed["pnl"], dtype=np.float64),
        trade_bars=durations,
        bars_in_market=int(all_bars.sum()),
        equity=np.asarray(portfolio.value(), dtype=np.float64),
    )


def pool_metrics(runs: Sequence[BacktestRun], periods_per_year: Sequence[float]) -> Metrics:
    """Metrics of several backtests taken together.

    Returns are concatenated (each segment starts flat, so nothing leaks across the joins), trades
    pooled; the annualization factor is the bar-weighted mean of the segments' factors.
    """
    if not runs:
        raise ValueError("no backtests to pool")
    returns = np.concatenate([r.returns for r in runs])
    weights = np.array([r.returns.size for r in runs], dtype=np.float64)
    ppy = float(np.average(np.asarray(periods_per_year, dtype=np.float64), weights=weights))
    return compute_metrics(
        returns=returns,
        pnl=np.concatenate([r.pnl for r in runs]),
        trade_bars=np.concatenate([r.trade_bars for r in runs]),
        bars_in_market=sum(r.bars_in_market for r in runs),
        periods_per_year=ppy,
    )
