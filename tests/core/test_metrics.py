"""Metrics on inputs small enough to work out by hand."""

import math

import numpy as np
import pytest

from ffe_dagster.core.backtest.metrics import (
    compute_metrics,
    max_drawdown_pct,
    profit_factor,
    sharpe_ratio,
    sortino_ratio,
    total_return_pct,
    win_rate_pct,
)

RETURNS = np.array([0.01, -0.02, 0.03])


def test_sharpe_matches_hand_computation() -> None:
    mean = (0.01 - 0.02 + 0.03) / 3
    var = ((0.01 - mean) ** 2 + (-0.02 - mean) ** 2 + (0.03 - mean) ** 2) / 2
    expected = mean / math.sqrt(var) * math.sqrt(252)
    assert sharpe_ratio(RETURNS, periods_per_year=252) == pytest.approx(expected, rel=1e-12)
    assert sharpe_ratio(RETURNS, periods_per_year=1) == pytest.approx(0.2649064, rel=1e-6)


def test_sortino_uses_downside_deviation() -> None:
    downside = math.sqrt((0.02**2) / 3)
    assert sortino_ratio(RETURNS, periods_per_year=1) == pytest.approx(
        (0.02 / 3) / downside, rel=1e-12
    )


def test_drawdown_total_return_and_trades() -> None:
    # equity 1.01 -> 0.9898 -> 1.019494: the fall from 1.01 to 0.9898 is exactly 2 %.
    assert max_drawdown_pct(RETURNS) == pytest.approx(2.0, rel=1e-12)
    assert total_return_pct(RETURNS) == pytest.approx(1.9494, rel=1e-12)
    pnl = np.array([10.0, -5.0, 0.0, 3.0])
    assert win_rate_pct(pnl) == 50.0  # the flat trade is not a win
    assert profit_factor(pnl) == pytest.approx(13.0 / 5.0)


def test_degenerate_inputs_give_zero_not_nan() -> None:
    flat = np.zeros(10)
    assert sharpe_ratio(flat, periods_per_year=252) == 0.0
    assert sortino_ratio(flat, periods_per_year=252) == 0.0
    assert win_rate_pct(np.array([])) == 0.0
    assert profit_factor(np.array([])) == 0.0
    m = compute_metrics(
        returns=np.array([]),
        pnl=np.array([]),
        trade_bars=np.array([]),
        bars_in_market=0,
        periods_per_year=252,
    )
    assert all(math.isfinite(v) for v in m.as_dict().values())


def test_metrics_do_not_modify_inputs() -> None:
    returns = RETURNS.copy()
    compute_metrics(
        returns=returns,
        pnl=np.array([1.0]),
        trade_bars=np.array([2.0]),
        bars_in_market=2,
        periods_per_year=252,
    )
    assert np.array_equal(returns, RETURNS)
