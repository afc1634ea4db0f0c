"""The performance the gates judge: paper trading on bars with the engine
(``paper_performance``) and live trading from the results the trading system reports
(``live_performance``, after ``normalize_live_results`` and ``combine_live_results``).

Paper performance starts at ``INIT_CASH`` (10,000 USD) per instrument, so dollar limits are
measured in that account.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from ffe_dagster.core.backtest import engine
from ffe_dagster.core.backtest.reference import INIT_CASH, CostModel, Direction, engine_row
from ffe_dagster.core.backtest.strategies import EntryStrategy
from ffe_dagster.core.promotion.config import PromotionRegime
from ffe_dagster.core.study.evaluation import MIN_PERIOD_BARS, Params, trade_params
from ffe_dagster.core.study.level_specs import bars_to_segment


@dataclass(frozen=True, slots=True)
class Performance:
    """What one parameter set did over a window, on paper (engine) or live (reported)."""

    sharpe: float
    win_rate_pct: float
    max_drawdown_pct: float
    n_trades: int
    n_wins: int
    pnl_usd: float
    worst_day_pnl_usd: float  # the worst UTC day's PnL; 0.0 without any day
    hours: float  # how much time the window covers
    extra: Mapping[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        """A flat ``name -> float`` mapping (for the registry, JSON and metadata)."""
        return {
            **{k: float(v) for k, v in self.extra.items()},
            "sharpe": self.sharpe,
            "win_rate_pct": self.win_rate_pct,
            "max_drawdown_pct": self.max_drawdown_pct,
            "n_trades": float(self.n_trades),
            "n_wins": float(self.n_wins),
            "pnl_usd": self.pnl_usd,
            "worst_day_pnl_usd": self.worst_day_pnl_usd,
            "hours": self.hours,
        }


def flat(hours: float = 0.0) -> Performance:
    """Staying out of the market for ``hours``: the baseline without a current version."""
    return Performance(
        sharpe=0.0,
        win_rate_pct=0.0,
        max_drawdown_pct=0.0,
        n_trades=0,
        n_wins=0,
        pnl_usd=0.0,
        worst_day_pnl_usd=0.0,
        hours=hours,
    )


# --- performance on bars -------------------------------------------------------------------


def watermark(bars: Mapping[str, pl.DataFrame]) -> dict[str, datetime]:
    """Per instrument, the newest bar known now: what a version made now has already seen."""
    out: dict[str, datetime] = {}
    for instrument, frame in bars.items():
        last = frame["ts"].max() if frame.height else None
        if isinstance(last, datetime):
            out[instrument] = last
    return out


def _floats(params: Params) -> dict[str, float]:
    return {k: float(v) for k, v in params.items() if not isinstance(v, str)}


def paper_performance(
    bars: Mapping[str, pl.DataFrame],
    params: Params,
    *,
    since: Mapping[str, datetime],
    strategy: EntryStrategy,
    direction: Direction,
    costs: CostModel,
    periods_per_year: Mapping[str, float],
    warmup_bars: int = 400,
) -> Performance:
    """Backtest ``params`` on the bars after ``since`` (per instrument), with the engine.

    Each instrument starts flat with ``INIT_CASH`` at its first bar after ``since``; signals are
    computed from ``warmup_bars`` earlier so indicators are warm. Metrics pool the instruments in
    order as everywhere in the project (``evaluation.evaluate_recent`` gives the same numbers);
    daily PnL adds the instruments' dollar PnL per UTC day. Instruments missing from ``since``
    are left out (they were not known when the version was made). ``hours`` is the longest span
    from ``since`` to an instrument's newest bar.
    """
    row = engine_row(trade_params(params), costs, direction)
    stats = engine.new_stats()
    daily: dict[np.datetime64, float] = {}
    n_bars = 0
    ppy_sum = 0.0
    pnl = 0.0
    hours = 0.0
    for instrument, frame in bars.items():
        mark = since.get(instrument)
        if mark is None or not frame.height:
            continue
        newest = frame["ts"][-1]
        hours = max(hours, (newest - mark).total_seconds() / 3600.0)
        lo = int((frame["ts"] <= mark).sum())
        n = frame.height
        if n - lo < MIN_PERIOD_BARS:
            continue
        start = max(0, lo - warmup_bars)
        segment = bars_to_segment(frame.slice(start), instrument, periods_per_year[instrument])
        signals = strategy.signals_for(segment, _floats(params))
        k = lo - start
        returns = np.zeros(n - lo, dtype=np.float64)
        no_trades = np.empty((0, engine.N_TRADE_FIELDS), dtype=np.float64)
        engine.simulate_segment(
            segment.open, segment.high, segment.low, segment.close, signals, k, len(segment),
            row, INIT_CASH, stats, no_trades, returns,
        )  # fmt: skip
        equity = INIT_CASH * np.cumprod(1.0 + returns)
        bar_pnl = np.diff(equity, prepend=INIT_CASH)
        days = segment.ts[k:].astype("datetime64[D]")
        for day, amount in zip(*_group_sum(days, bar_pnl), strict=True):
            daily[day] = daily.get(day, 0.0) + amount
        pnl += float(equity[-1] - INIT_CASH)
        n_bars += n - lo
        ppy_sum += periods_per_year[instrument] * (n - lo)
    if not n_bars:
        return flat(hours)
    metrics = engine.stats_to_metrics(stats, ppy_sum / n_bars)
    return Performance(
        sharpe=metrics.sharpe,
        win_rate_pct=metrics.win_rate_pct,
        max_drawdown_pct=metrics.max_drawdown_pct,
        n_trades=metrics.n_trades,
        n_wins=int(stats[engine.S_WINS]),
        pnl_usd=pnl,
        worst_day_pnl_usd=min(daily.values()),
        hours=hours,
        extra={**metrics.as_dict(), "bars": float(n_bars)},
    )


def _group_sum(keys: np.ndarray, values: np.ndarray) -> tuple[list[np.datetime64], list[float]]:
    uniques, inverse = np.unique(keys, return_inverse=True)
    sums = np.zeros(uniques.size, dtype=np.float64)
    np.add.at(sums, inverse, values)
    return list(uniques), [float(s) for s in sums]


# --- live results -----------------------------------------------------------------------------

LIVE_RESULT_COLUMNS: Mapping[str, pl.DataType] = {
    "trade_id": pl.String(),
    "regime": pl.String(),
    "version": pl.Int64(),
    "instrument": pl.String(),
    "opened_at": pl.Datetime("us", "UTC"),
    "closed_at": pl.Datetime("us", "UTC"),
    "pnl_usd": pl.Float64(),
    "capital_usd": pl.Float64(),
}


def normalize_live_results(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    """Check one file of live results against the documented format and cast it.

    Timestamps without a zone are read as UTC. Raises ``ValueError`` naming the file and the
    problem: a missing column, a null, a regime that does not exist, a non-positive capital.
    """
    missing = [c for c in LIVE_RESULT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"live results {source}: missing columns {missing}")
    out = frame.select(list(LIVE_RESULT_COLUMNS))
    for name in ("opened_at", "closed_at"):
        column = out[name]
        if column.dtype == pl.String:
            column = column.str.to_datetime(time_unit="us")
        if not isinstance(column.dtype, pl.Datetime):
            raise ValueError(f"live results {source}: {name} is {column.dtype}, not a timestamp")
        if column.dtype.time_zone is None:
            column = column.dt.replace_time_zone("UTC")
        out = out.with_columns(column.dt.convert_time_zone("UTC").dt.cast_time_unit("us"))
    try:
        out = out.cast(pl.Schema(LIVE_RESULT_COLUMNS))
    except pl.exceptions.PolarsError as error:
        raise ValueError(f"live results {source}: {error}") from error
    nulls = [c for c in out.columns if out[c].null_count()]
    if nulls:
        raise ValueError(f"live results {source}: nulls in {nulls}")
    unknown = set(out["regime"].unique()) - {r.value for r in PromotionRegime}
    if unknown:
        raise ValueError(f"live results {source}: unknown regimes {sorted(unknown)}")
    if (out["capital_usd"] <= 0).any():
        raise ValueError(f"live results {source}: capital_usd must be positive")
    if (out["closed_at"] < out["opened_at"]).any():
        raise ValueError(f"live results {source}: a trade closes before it opens")
    return out


def combine_live_results(frames: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """All normalized files as one table. A trade sent twice (same ``trade_id``, same values) is
    kept once; the same ``trade_id`` with different values is an error."""
    if not frames:
        return pl.DataFrame(schema=dict(LIVE_RESULT_COLUMNS))
    out = pl.concat(frames).unique(maintain_order=True)
    clashes = out.filter(pl.col("trade_id").is_duplicated())["trade_id"].unique().to_list()
    if clashes:
        raise ValueError(f"live results: trade_id with conflicting rows: {sorted(clashes)[:5]}")
    return out.sort("closed_at")


def live_performance(
    results: pl.DataFrame,
    *,
    regime: str,
    version: int,
    since: datetime,
    until: datetime,
    bar_period: timedelta,
    periods_per_year: float,
) -> Performance:
    """Performance of one version from its trades that closed in ``[since, until)``.

    Returns per trade are ``pnl_usd / capital_usd``. Sharpe: those returns summed per
    ``bar_period`` bucket from ``since`` (buckets without a closed trade count as 0), annualized
    with ``periods_per_year``, so it reads like the bar Sharpe of the backtests (realized PnL is
    lumpier than marked-to-market; both sides of a comparison are measured alike). Drawdown: of
    the cumulative return in closing order, from a start of 1. Daily PnL: by UTC day of closing.
    """
    if until < since:
        raise ValueError(f"live window ends before it starts: {since} .. {until}")
    rows = results.filter(
        (pl.col("regime") == regime)
        & (pl.col("version") == version)
        & (pl.col("closed_at") >= since)
        & (pl.col("closed_at") < until)
    ).sort("closed_at")
    hours = (until - since).total_seconds() / 3600.0
    if rows.is_empty():
        return flat(hours)
    pnl = rows["pnl_usd"].to_numpy()
    returns = pnl / rows["capital_usd"].to_numpy()
    n_buckets = math.ceil((until - since) / bar_period)
    offsets = (rows["closed_at"] - since).to_numpy() // np.timedelta64(bar_period)
    buckets = np.zeros(n_buckets, dtype=np.float64)
    np.add.at(buckets, offsets.astype(np.int64), returns)
    sharpe = 0.0
    if n_buckets >= 2:
        std = float(np.std(buckets, ddof=1))
        if std > 0.0:
            sharpe = float(np.mean(buckets)) / std * math.sqrt(periods_per_year)
    equity = 1.0 + np.cumsum(returns)
    peak = np.maximum.accumulate(np.concatenate(([1.0], equity)))[1:]
    days = rows["closed_at"].dt.replace_time_zone(None).to_numpy().astype("datetime64[D]")
    _, day_pnl = _group_sum(days, pnl)
    wins = int((pnl > 0).sum())
    return Performance(
        sharpe=sharpe,
        win_rate_pct=wins / pnl.size * 100.0,
        max_drawdown_pct=float(np.max(1.0 - equity / peak) * 100.0),
        n_trades=int(pnl.size),
        n_wins=wins,
        pnl_usd=float(pnl.sum()),
        worst_day_pnl_usd=min(day_pnl),
        hours=hours,
        extra={"total_return_pct": float(returns.sum() * 100.0)},
    )
