"""vectorbt backtests on a ten-bar series whose trades can be counted by hand.

Bars (open, close): (100,100) (100,101) (101,102) (102,104) (104,103) (103,101) (101,99)
(99,100) (100,102) (102,103); high = max(open, close) + 0.5, low = min(open, close) - 0.5.
Positions are 50 % of the 10,000 starting equity: a 5,000 notional.
"""

import numpy as np
import pytest

from ffe_dagster.core.backtest.reference import (
    INIT_CASH,
    CostModel,
    Direction,
    Segment,
    StopMode,
    TradeParams,
    pool_metrics,
    run_backtest,
)

OPEN = np.array([100, 100, 101, 102, 104, 103, 101, 99, 100, 102], dtype=np.float64)
CLOSE = np.array([100, 101, 102, 104, 103, 101, 99, 100, 102, 103], dtype=np.float64)
SEGMENT = Segment(
    instrument="TEST",
    ts=np.arange(10).astype("datetime64[h]").astype("datetime64[us]"),
    open=OPEN,
    high=np.maximum(OPEN, CLOSE) + 0.5,
    low=np.minimum(OPEN, CLOSE) - 0.5,
    close=CLOSE,
    periods_per_year=8760,
)
NO_COSTS = CostModel(fee_pct=0.0)


def _signals(**at: int) -> np.ndarray:
    signals = np.zeros(10, dtype=np.int8)
    for bar, value in at.items():
        signals[int(bar.removeprefix("b"))] = value
    return signals


def _params(sl: float, tp: float, mode: StopMode = StopMode.FIXED, trail: float = 2.0):
    return TradeParams(
        stop_loss_pct=sl,
        take_profit_pct=tp,
        position_size_pct=50.0,
        trailing_stop_pct=trail,
        stop_mode=mode,
    )


def test_long_take_profit_hit_inside_bar_3() -> None:
    # Entry at bar 1's close 101 with 5,000 -> 49.50495 units; TP at 103.02 is first reached by
    # bar 3's high 104.5 (open 102 is below it), so the exit fills at 103.02:
    # PnL = 5000 / 101 * 2.02 = 100.0, held 2 bars.
    run = run_backtest(
        SEGMENT, _signals(b1=1), direction=Direction.LONG, params=_params(2, 2), costs=NO_COSTS
    )
    assert run.pnl.tolist() == pytest.approx([100.0], rel=1e-9)
    assert run.trade_bars.tolist() == [2.0]
    m = pool_metrics([run], [8760])
    assert m.n_trades == 1 and m.win_rate_pct == 100.0
    assert m.total_return_pct == pytest.approx(100.0 / INIT_CASH * 100, rel=1e-9)


def test_long_fees_are_charged_on_both_sides() -> None:
    # 0.1 % of 5,000 at entry (5.0) and of 49.50495 * 103.02 = 5,100 at exit (5.1).
    run = run_backtest(
        SEGMENT,
        _signals(b1=1),
        direction=Direction.LONG,
        params=_params(2, 2),
        costs=CostModel(fee_pct=0.1),
    )
    assert run.pnl.tolist() == pytest.approx([100.0 - 5.0 - 5.1], rel=1e-9)


def test_short_take_profit() -> None:
    # Short at bar 3's close 104 (5,000 / 104 units). TP 4 % -> 99.84, first touched by bar 6
    # (low 98.5, open 101): PnL = 5000 / 104 * (104 - 99.84) = 200.0, held 3 bars.
    run = run_backtest(
        SEGMENT, _signals(b3=-1), direction=Direction.SHORT, params=_params(3, 4), costs=NO_COSTS
    )
    assert run.pnl.tolist() == pytest.approx([200.0], rel=1e-9)
    assert run.trade_bars.tolist() == [3.0]


def test_long_only_ignores_short_signals_and_short_only_ignores_long() -> None:
    long_only = run_backtest(
        SEGMENT, _signals(b3=-1), direction=Direction.LONG, params=_params(3, 4), costs=NO_COSTS
    )
    short_only = run_backtest(
        SEGMENT, _signals(b1=1), direction=Direction.SHORT, params=_params(2, 2), costs=NO_COSTS
    )
    assert long_only.pnl.size == 0 and short_only.pnl.size == 0
    assert not long_only.returns.any()


def test_trailing_stop_follows_the_highs() -> None:
    # Long at 101; the 2 % trail follows the highs 102.5 and 104.5 up to 104.5 * 0.98 = 102.41;
    # bar 5 (low 100.5) hits it: PnL = 5000 / 101 * (102.41 - 101) = 69.80198...
    run = run_backtest(
        SEGMENT,
        _signals(b1=1),
        direction=Direction.LONG,
        params=_params(5, 10, StopMode.TRAILING, trail=2.0),
        costs=NO_COSTS,
    )
    assert run.pnl.tolist() == pytest.approx([5000 / 101 * 1.41], rel=1e-9)
    assert run.trade_bars.tolist() == [4.0]


def test_both_directions_reverse_on_the_opposite_signal() -> None:
    # Long at bar 1 (101); the short signal at bar 5 (close 101) closes it flat (PnL 0, not a
    # win) and opens a short that is still open at the end (close 103: -2 per unit).
    run = run_backtest(
        SEGMENT,
        _signals(b1=1, b5=-1),
        direction=Direction.BOTH,
        params=_params(5, 10),
        costs=NO_COSTS,
    )
    assert run.pnl.tolist() == pytest.approx([0.0], abs=1e-9)
    assert run.equity[-1] == pytest.approx(INIT_CASH - 5000 / 101 * 2, rel=1e-9)
    assert run.bars_in_market == 4 + 4


def test_signals_of_the_wrong_length_are_rejected() -> None:
    with pytest.raises(ValueError, match="signals have 3 bars"):
        run_backtest(
            SEGMENT,
            np.zeros(3, dtype=np.int8),
            direction=Direction.LONG,
            params=_params(2, 2),
            costs=NO_COSTS,
        )
