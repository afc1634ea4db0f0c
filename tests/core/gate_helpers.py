"""What the promotion gate and safety tests share: the default limits, a performance that passes
them, and the names of a decision's failed or pending checks."""

from ffe_dagster.core.promotion.checks import GateDecision
from ffe_dagster.core.promotion.config import SafetyLimits
from ffe_dagster.core.promotion.performance import Performance

LIMITS = SafetyLimits()
GOOD = Performance(
    sharpe=1.0,
    win_rate_pct=55.0,
    max_drawdown_pct=1.0,
    n_trades=25,
    n_wins=14,
    pnl_usd=50.0,
    worst_day_pnl_usd=-2.0,
    hours=100.0,
    extra={"total_return_pct": 0.5},
)


def names(decision: GateDecision, *, failed: bool = True) -> set[str]:
    """The failed checks' names, or with ``failed=False`` the pending ones."""
    if failed:
        return {c.name for c in decision.checks if not c.passed and not c.waiting}
    return {c.name for c in decision.checks if c.waiting}
