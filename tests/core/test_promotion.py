"""The COLD gate and the choice of a candidate per regime."""

from dataclasses import replace

from ffe_dagster.core.metrics import Metrics
from ffe_dagster.core.promotion import (
    ColdGateConfig,
    PromotionRegime,
    choose_for_regime,
    cold_gate,
)

GOOD = Metrics(
    sharpe=1.0,
    sortino=1.0,
    max_drawdown_pct=1.0,
    win_rate_pct=55.0,
    profit_factor=1.5,
    total_return_pct=0.5,
    n_trades=25,
    avg_trade_bars=3.0,
    exposure_pct=10.0,
)


def test_the_window_grows_until_there_are_enough_trades() -> None:
    asked: list[int] = []

    def evaluate(days: int) -> Metrics:
        asked.append(days)
        return replace(GOOD, n_trades={7: 4, 14: 12, 30: 25}[days])

    decision = cold_gate(evaluate, ColdGateConfig())
    assert asked == [7, 14, 30]
    assert decision.passed and decision.window_days == 30


def test_each_failed_threshold_is_named_in_the_reason() -> None:
    bad = replace(GOOD, sharpe=0.2, total_return_pct=-0.1)
    decision = cold_gate(lambda _: bad, ColdGateConfig())
    assert not decision.passed
    assert "sharpe 0.2" in decision.reason and "pnl -0.1%" in decision.reason
    assert "win_rate" not in decision.reason


def test_the_first_passing_candidate_is_chosen() -> None:
    candidates = [{"x": 1.0}, {"x": 2.0}, {"x": 3.0}]

    def gate(params):  # only x >= 2 passes
        metrics = GOOD if params["x"] >= 2 else replace(GOOD, sharpe=0.0)
        return cold_gate(lambda _: metrics, ColdGateConfig())

    choice = choose_for_regime(PromotionRegime.BULL, 1, candidates, gate)
    assert choice.params == {"x": 2.0} and choice.tried == 2
    none = choose_for_regime(PromotionRegime.BEAR, 2, candidates[:1], gate)
    assert none.params is None and "no candidate of level 2 passed" in none.reason
