"""Performance metrics of a backtest, as pure functions over numpy arrays.

Conventions: ``returns`` are simple per-bar returns of portfolio value; ``pnl`` is one entry per
closed trade in cash; ratios are annualized with ``periods_per_year`` bars per year. Zero
volatility or no trades give 0.0 rather than NaN. The one infinite value is the profit factor of
trades with gains and no loss: it is ``inf`` (no finite number of losses-to-gains describes it), and
every store that cannot hold ``inf`` encodes it explicitly: MLflow gets it as a tag
(``split_non_finite``), Dagster metadata as the string ``"inf"`` (``spell_non_finite``; the UI's
JSON parser rejects ``Infinity``), the warehouse as a tagged JSON value. No optimizer objective uses
the profit factor, so the samplers never see it.
"""

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Metrics:
    """The metrics of one backtest (or of several pooled)."""

    sharpe: float
    sortino: float
    max_drawdown_pct: float
    win_rate_pct: float
    profit_factor: float
    total_return_pct: float
    n_trades: int
    avg_trade_bars: float
    exposure_pct: float

    def as_dict(self) -> dict[str, float]:
        """Metrics as a flat ``name -> float`` mapping (for tables, MLflow and JSON)."""
        return {k: float(v) for k, v in asdict(self).items()}


def sharpe_ratio(returns: FloatArray, *, periods_per_year: float) -> float:
    """Annualized Sharpe ratio (risk-free rate 0, sample std with ddof=1)."""
    if returns.size < 2:
        return 0.0
    std = float(np.std(returns, ddof=1))
    if std == 0.0 or not np.isfinite(std):
        return 0.0
    return float(np.mean(returns)) / std * float(np.sqrt(periods_per_year))


def sortino_ratio(returns: FloatArray, *, periods_per_year: float) -> float:
    """Annualized Sortino ratio: mean over downside deviation (root mean square of min(r, 0))."""
    if returns.size < 2:
        return 0.0
    downside = float(np.sqrt(np.mean(np.minimum(returns, 0.0) ** 2)))
    if downside == 0.0:
        return 0.0
    return float(np.mean(returns)) / downside * float(np.sqrt(periods_per_year))


def max_drawdown_pct(returns: FloatArray) -> float:
    """Largest peak-to-trough fall of the compounded equity curve, in percent (>= 0)."""
    if returns.size == 0:
        return 0.0
    equity = np.cumprod(1.0 + returns)
    peaks = np.maximum.accumulate(np.concatenate(([1.0], equity)))[1:]
    return float(np.max(1.0 - equity / peaks) * 100.0)


def win_rate_pct(pnl: FloatArray) -> float:
    """Share of closed trades with a strictly positive PnL, in percent."""
    if pnl.size == 0:
        return 0.0
    return float(np.count_nonzero(pnl > 0.0) / pnl.size * 100.0)


def profit_factor(pnl: FloatArray) -> float:
    """Gross profit over gross loss of the closed trades.

    ``inf`` when there are gains and no loss (three $0.30 wins: inf, which passes any
    ``min_profit_factor``); 0.0 when there is no gain at all (no trades, or only flat trades).
    """
    gains = float(pnl[pnl > 0.0].sum())
    losses = float(-pnl[pnl < 0.0].sum())
    return profit_factor_of(gains, losses)


def profit_factor_of(gains: float, losses: float) -> float:
    """Profit factor from gross profit and gross loss (a positive number), as ``profit_factor``."""
    if losses > 0.0:
        return gains / losses
    return math.inf if gains > 0.0 else 0.0


def total_return_pct(returns: FloatArray) -> float:
    """Compounded return over the whole series, in percent."""
    return float((np.prod(1.0 + returns) - 1.0) * 100.0)


def compute_metrics(
    *,
    returns: FloatArray,
    pnl: FloatArray,
    trade_bars: FloatArray,
    bars_in_market: int,
    periods_per_year: float,
) -> Metrics:
    """All metrics of one backtest, or of several whose returns and trades were concatenated."""
    return Metrics(
        sharpe=sharpe_ratio(returns, periods_per_year=periods_per_year),
        sortino=sortino_ratio(returns, periods_per_year=periods_per_year),
        max_drawdown_pct=max_drawdown_pct(returns),
        win_rate_pct=win_rate_pct(pnl),
        profit_factor=profit_factor(pnl),
        total_return_pct=total_return_pct(returns),
        n_trades=int(pnl.size),
        avg_trade_bars=float(trade_bars.mean()) if trade_bars.size else 0.0,
        exposure_pct=float(bars_in_market / returns.size * 100.0) if returns.size else 0.0,
    )


NON_FINITE_NAMES = {math.inf: "inf", -math.inf: "-inf"}


def split_non_finite(
    metrics: Mapping[str, float],
) -> tuple[dict[str, float], dict[str, str]]:
    """``metrics`` split into the finite values and the others spelled out (``"inf"``).

    MLflow 3's SQL store silently turns ``inf`` into 1.8e308, so the tracking code logs the
    finite ones as metrics and the others as tags that say ``inf``.
    """
    finite: dict[str, float] = {}
    other: dict[str, str] = {}
    for name, value in metrics.items():
        if math.isfinite(value):
            finite[name] = value
        else:
            other[name] = NON_FINITE_NAMES.get(value, "nan")
    return finite, other


def spell_non_finite(value: Any) -> Any:
    """``value`` (nested mappings and lists) with every non-finite float spelled as a string."""
    if isinstance(value, float) and not math.isfinite(value):
        return NON_FINITE_NAMES.get(value, "nan")
    if isinstance(value, Mapping):
        return {k: spell_non_finite(v) for k, v in value.items()}  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, list | tuple):
        return [spell_non_finite(v) for v in value]  # pyright: ignore[reportUnknownVariableType]
    return value
