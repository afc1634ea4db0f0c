"""Backtests on vectorbt and the metrics of a parameter set over many data segments.

Execution model (vectorbt ``Portfolio.from_signals``): an entry fills at the close of the signal
bar; stop loss, trailing stop and take profit are checked from the next bar on against its high and
low and fill at the stop price (or at the open when the bar gaps through it); fees and slippage
apply per side. Each position is worth ``position_size_pct`` of the starting equity: a fixed
notional, because vectorbt's percent-of-cash sizing cannot reverse a position in ``BOTH`` mode.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt
import pandas as pd
import vectorbt as vbt

from ffe_dagster.core.metrics import FloatArray, Metrics, compute_metrics
from ffe_dagster.core.strategies import Signals

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
) -> "vbt.Portfolio":
    """Run vectorbt's ``Portfolio.from_signals`` for one segment and parameter set."""
    if signals.shape != segment.close.shape:
        raise ValueError(
            f"signals have {signals.shape[0]} bars, segment {segment.instrument} has {len(segment)}"
        )
    trailing = params.stop_mode is StopMode.TRAILING
    stop = params.trailing_stop_pct if trailing else params.stop_loss_pct
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
        sl_stop=stop / 100.0,
        sl_trail=trailing,
        tp_stop=params.take_profit_pct / 100.0,
        size=params.position_size_pct / 100.0 * INIT_CASH,
        size_type="value",
        upon_opposite_entry="reverse",
        fees=costs.fee_pct / 100.0,
        slippage=costs.slippage_pct / 100.0,
        init_cash=INIT_CASH,
    )


def run_backtest(
    segment: Segment,
    signals: Signals,
    *,
    direction: Direction,
    params: TradeParams,
    costs: CostModel,
) -> BacktestRun:
    """Backtest one segment and return its per-bar returns and closed trades."""
    portfolio = simulate(segment, signals, direction=direction, params=params, costs=costs)
    trades = portfolio.get_trades().records
    closed = trades[trades["status"] == 1]
    durations = (closed["exit_idx"] - closed["entry_idx"]).astype(np.float64)
    all_bars = (
        np.where(trades["status"] == 1, trades["exit_idx"], segment.close.size - 1)
        - trades["entry_idx"]
    )
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
