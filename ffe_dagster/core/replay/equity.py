"""What a replayed choice earned: a parameter set traded on the bars of one period, per UTC day,
the trades a LIMITED set would report in the live-results format, how an account's capital is
shared between a regime's current and LIMITED sets, and the summary of a daily equity curve
(total return, Sharpe, Sortino, max drawdown, trades).

Each period starts flat with ``INIT_CASH`` per instrument (as ``paper_performance`` does), its
signals warmed on the bars before the period; the engine is the one every backtest uses.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from ffe_dagster.core.backtest import engine
from ffe_dagster.core.backtest.metrics import (
    FloatArray,
    max_drawdown_pct,
    sharpe_ratio,
    sortino_ratio,
    total_return_pct,
)
from ffe_dagster.core.backtest.reference import INIT_CASH, CostModel, Direction, engine_row
from ffe_dagster.core.backtest.strategies import EntryStrategy
from ffe_dagster.core.promotion.performance import LIVE_RESULT_COLUMNS
from ffe_dagster.core.study.evaluation import Params, trade_params
from ffe_dagster.core.study.level_specs import bars_to_segment

DAYS_PER_YEAR = 365.0  # daily returns of a portfolio that holds crypto (traded every day)


@dataclass(frozen=True, slots=True)
class Trading:
    """How parameter sets are traded in the replay: strategy, costs, annualization, warm-up."""

    strategy: EntryStrategy
    costs: CostModel
    periods_per_year: Mapping[str, float]
    warmup_bars: int = 400


@dataclass(frozen=True, slots=True)
class PeriodResult:
    """One instrument traded over one period: dollar PnL per UTC day and its trades."""

    daily_pnl: Mapping[str, float]  # ISO day -> USD
    trades: pl.DataFrame  # instrument, opened_at, closed_at, pnl_usd, closed


def _floats(params: Params) -> dict[str, float]:
    return {k: float(v) for k, v in params.items() if not isinstance(v, str)}


def trade_period(
    frame: pl.DataFrame,
    instrument: str,
    params: Params,
    direction: Direction,
    trading: Trading,
    *,
    start: datetime,
    end: datetime,
) -> PeriodResult:
    """``params`` traded on ``frame``'s bars with ``start <= ts < end``, flat at ``start``.

    Signals are computed from ``warmup_bars`` bars before ``start`` (no later bar than the
    period's own: the frame is cut at ``end`` first). A position still open at the period's
    last bar is marked to market there and listed with ``closed`` False.
    """
    part = frame.filter(pl.col("ts") < end)
    lo = int((part["ts"] < start).sum())
    n = part.height
    empty = pl.DataFrame(
        schema={
            "instrument": pl.String,
            "opened_at": pl.Datetime("us", "UTC"),
            "closed_at": pl.Datetime("us", "UTC"),
            "pnl_usd": pl.Float64,
            "closed": pl.Boolean,
        }
    )
    if n - lo < 2:
        return PeriodResult({}, empty)
    first = max(0, lo - trading.warmup_bars)
    segment = bars_to_segment(part.slice(first), instrument, trading.periods_per_year[instrument])
    signals = trading.strategy.signals_for(segment, _floats(params))
    k = lo - first
    returns = np.zeros(n - lo, dtype=np.float64)
    trades = np.zeros((n - lo + 1, engine.N_TRADE_FIELDS), dtype=np.float64)
    row = engine_row(trade_params(params), trading.costs, direction)
    count = engine.simulate_segment(
        segment.open, segment.high, segment.low, segment.close, signals, k, len(segment),
        row, INIT_CASH, engine.new_stats(), trades, returns,
    )  # fmt: skip
    equity = INIT_CASH * np.cumprod(1.0 + returns)
    bar_pnl = np.diff(equity, prepend=INIT_CASH)
    days = segment.ts[k:].astype("datetime64[D]").astype(str)
    daily: dict[str, float] = {}
    for day, amount in zip(days.tolist(), bar_pnl.tolist(), strict=True):
        daily[day] = daily.get(day, 0.0) + amount
    ts = part["ts"].slice(lo)
    done = trades[:count]
    return PeriodResult(
        daily,
        pl.DataFrame(
            {
                "instrument": [instrument] * count,
                "opened_at": [ts[int(i)] for i in done[:, engine.T_ENTRY_IDX]],
                "closed_at": [ts[int(i)] for i in done[:, engine.T_EXIT_IDX]],
                "pnl_usd": done[:, engine.T_PNL].tolist(),
                "closed": (done[:, engine.T_CLOSED] == 1.0).tolist(),
            },
            schema=empty.schema,
        ),
    )


def live_rows(
    result: PeriodResult, *, regime: str, version: int, capital_fraction: float
) -> pl.DataFrame:
    """The closed trades of ``result`` as the trading system reports them (the live-results
    format, README "Promotion"), traded with ``capital_fraction`` of ``INIT_CASH``: PnL scales
    with the capital, so a LIMITED set at 10 % reports a tenth of the paper PnL."""
    closed = result.trades.filter(pl.col("closed"))
    capital = INIT_CASH * capital_fraction
    return closed.select(
        (
            pl.lit(f"{regime}-v{version}-")
            + pl.col("instrument")
            + pl.lit("-")
            + pl.col("opened_at").dt.strftime("%Y%m%dT%H%M")
        ).alias("trade_id"),
        pl.lit(regime).alias("regime"),
        pl.lit(version, dtype=pl.Int64).alias("version"),
        "instrument",
        "opened_at",
        "closed_at",
        (pl.col("pnl_usd") * capital_fraction).alias("pnl_usd"),
        pl.lit(capital).alias("capital_usd"),
    ).cast(pl.Schema(LIVE_RESULT_COLUMNS))  # pyright: ignore[reportArgumentType]


def capital_shares(*, current: bool, limited: bool, fraction: float) -> tuple[float, float]:
    """The shares of an account's capital (current set, LIMITED set) while a regime has
    ``current`` and/or ``limited`` sets: a LIMITED set trades ``fraction`` of the capital
    (``promotion.yaml``'s ``limited.capital_fraction``) and the current set the rest; without a
    LIMITED set the current one trades all of it (FULL at 100 %)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"capital fraction must be in (0, 1], got {fraction}")
    share = fraction if limited else 0.0
    return (1.0 - share if current else 0.0), share


def weighted_pnl(legs: Sequence[tuple[Mapping[str, float], float]]) -> dict[str, float]:
    """The daily dollar PnL of one account traded by several sets at once, each ``(daily PnL of
    the set traded with the whole capital, its share of the capital)``: PnL scales with the
    capital a set trades (the engine sizes positions as a share of equity)."""
    out: dict[str, float] = {}
    for pnl, share in legs:
        for day, amount in pnl.items():
            out[day] = out.get(day, 0.0) + amount * share
    return out


@dataclass(frozen=True, slots=True)
class EquitySummary:
    """A daily equity curve summarized (returns are per UTC day, annualized with 365)."""

    total_return_pct: float
    sharpe: float
    sortino: float
    max_drawdown_pct: float
    trades: int
    days: int

    def as_dict(self) -> dict[str, float]:
        """The summary as plain numbers (for JSON, Markdown and MLflow)."""
        return {
            "total_return_pct": self.total_return_pct,
            "sharpe": self.sharpe,
            "sortino": self.sortino,
            "max_drawdown_pct": self.max_drawdown_pct,
            "trades": float(self.trades),
            "days": float(self.days),
        }


def summarize(daily_returns: FloatArray, trades: int) -> EquitySummary:
    """Total return, Sharpe, Sortino, max drawdown of daily returns (``core.backtest.metrics``)."""
    r = np.asarray(daily_returns, dtype=np.float64)
    return EquitySummary(
        total_return_pct=total_return_pct(r) if r.size else 0.0,
        sharpe=sharpe_ratio(r, periods_per_year=DAYS_PER_YEAR),
        sortino=sortino_ratio(r, periods_per_year=DAYS_PER_YEAR),
        max_drawdown_pct=max_drawdown_pct(r) if r.size else 0.0,
        trades=trades,
        days=int(r.size),
    )


def portfolio_returns(
    daily_pnl: Sequence[Mapping[str, float]], days: Sequence[str], capital: float
) -> FloatArray:
    """Daily returns of a book of ``capital`` USD from the per-instrument daily dollar PnL
    (each period's accounts restart at ``INIT_CASH``, so the book's return on a day is that
    day's summed PnL over the book); days without PnL return 0."""
    if capital <= 0.0:
        raise ValueError(f"capital must be positive, got {capital}")
    total = dict.fromkeys(days, 0.0)
    for pnl in daily_pnl:
        for day, amount in pnl.items():
            if day in total:
                total[day] += amount
    return np.array([total[d] / capital for d in days], dtype=np.float64)


def buy_and_hold(
    frame: pl.DataFrame, costs: CostModel, *, start: datetime, end: datetime
) -> dict[str, float]:
    """Dollar PnL per UTC day of ``INIT_CASH`` bought at the first open at or after ``start``
    and held to the last close before ``end``, paying the fee and slippage once on entry."""
    part = frame.filter((pl.col("ts") >= start) & (pl.col("ts") < end))
    if part.is_empty():
        return {}
    entry = float(part["open"][0])
    units = INIT_CASH * (1.0 - (costs.fee_pct + costs.slippage_pct) / 100.0) / entry
    value = units * part["close"].to_numpy()
    pnl = np.diff(value, prepend=INIT_CASH)
    days = part["ts"].dt.strftime("%Y-%m-%d").to_list()
    out: dict[str, float] = {}
    for day, amount in zip(days, pnl.tolist(), strict=True):
        out[day] = out.get(day, 0.0) + amount
    return out
