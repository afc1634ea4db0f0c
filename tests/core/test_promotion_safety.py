"""The safety limits on hand-made performance, each with its own reason, and the configs that
refuse impossible waits."""

from dataclasses import replace

import pytest

from ffe_dagster.core.promotion.config import (
    LimitedGateConfig,
    Outcome,
    WarmGateConfig,
)
from ffe_dagster.core.promotion.performance import (
    Performance,
)
from ffe_dagster.core.promotion.safety import safety_gate, sharpe_degradation_pct
from tests.core.gate_helpers import GOOD, LIMITS, names

# --- safety limits ------------------------------------------------------------------------------


def _safety(perf: Performance, reference: float = 2.0):
    return safety_gate(perf, reference_sharpe=reference, limits=LIMITS, window="new bars")


@pytest.mark.parametrize(
    ("field", "ok", "breach", "check", "text"),
    [
        (
            "worst_day_pnl_usd",
            -5.0,
            -5.01,
            "safety.daily_loss",
            "safety.daily_loss $5.01 (too high; needs <= $5.00)",
        ),
        (
            "sharpe",
            1.4,
            1.39,
            "safety.sharpe_degradation",
            "safety.sharpe_degradation 30.5% (too high; needs <= 30%)",
        ),
        (
            "max_drawdown_pct",
            8.0,
            8.01,
            "safety.max_drawdown",
            "safety.max_drawdown 8.01% (too high; needs <= 8%)",
        ),
        (
            "win_rate_pct",
            40.0,
            39.99,
            "safety.win_rate",
            "safety.win_rate 39.99% (too low; needs >= 40%)",
        ),
    ],
)
def test_each_safety_limit_has_its_own_reason(
    field: str, ok: float, breach: float, check: str, text: str
) -> None:
    base = replace(GOOD, sharpe=2.0)
    assert _safety(replace(base, **{field: ok})).passed
    decision = _safety(replace(base, **{field: breach}))
    assert decision.outcome is Outcome.FAIL
    assert names(decision) == {check}
    assert text in decision.reason
    assert decision.reason.startswith("FULL failed on new bars: ")


def test_statistical_limits_wait_for_twenty_trades_loss_limits_do_not() -> None:
    few = replace(GOOD, n_trades=19, sharpe=-3.0, win_rate_pct=10.0)
    decision = _safety(few)
    assert decision.outcome is Outcome.WAIT
    assert names(decision, failed=False) == {
        "safety.min_trades",
        "safety.sharpe_degradation",
        "safety.win_rate",
    }
    assert "safety.min_trades not judged (19 trades so far, needs 20)" in decision.reason
    breach = _safety(replace(few, n_trades=3, max_drawdown_pct=9.0))
    assert breach.outcome is Outcome.FAIL and names(breach) == {"safety.max_drawdown"}
    assert _safety(replace(GOOD, sharpe=2.0, n_trades=20)).passed


@pytest.mark.parametrize(
    ("reference", "observed", "expected"),
    [(2.0, 2.5, 0.0), (2.0, 1.0, 50.0), (1.0, -1.0, 200.0), (0.0, -0.1, 100.0), (-1.0, -0.5, 0.0)],
)
def test_sharpe_degradation(reference: float, observed: float, expected: float) -> None:
    assert sharpe_degradation_pct(reference, observed) == pytest.approx(expected)


def test_configs_refuse_impossible_waits() -> None:
    with pytest.raises(ValueError, match="max_wait_hours"):
        WarmGateConfig(min_hours=10.0, max_wait_hours=5.0)
    with pytest.raises(ValueError, match="capital_fraction"):
        LimitedGateConfig(capital_fraction=0.0)
