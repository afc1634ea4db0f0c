"""The safety limits, checked at every stage and on the current set after its promotion.

The loss limits (daily loss, drawdown) are judged on any number of trades, because the money is
lost whatever the sample size; the statistical ones (win rate, Sharpe degradation) only from
``min_trades`` trades on. Until then a stage that can wait, waits.
"""

from ffe_dagster.core.promotion.checks import (
    GateCheck,
    GateDecision,
    at_least,
    at_most,
    outcome_of,
    pending_check,
)
from ffe_dagster.core.promotion.config import SafetyLimits, Stage
from ffe_dagster.core.promotion.performance import Performance


def sharpe_degradation_pct(reference: float, observed: float) -> float:
    """How far ``observed`` fell below ``reference``, in percent of it (0 when it did not fall).

    From a reference of zero or below there is no percentage to take; any fall counts as 100 %.
    """
    if observed >= reference:
        return 0.0
    if reference > 0.0:
        return (reference - observed) / reference * 100.0
    return 100.0


def safety_checks(
    perf: Performance, *, reference_sharpe: float, limits: SafetyLimits, can_wait: bool
) -> tuple[GateCheck, ...]:
    """The five safety limits of docs/spec.md §5, each with its own reason.

    ``reference_sharpe`` is what the set was expected to do (its validation Sharpe at COLD, its
    COLD Sharpe afterwards). With fewer than ``limits.min_trades`` trades the statistical limits
    are pending, and the trade count waits when ``can_wait`` (else it fails).
    """
    loss = max(0.0, -perf.worst_day_pnl_usd)
    trades = at_least("safety.min_trades", float(perf.n_trades), float(limits.min_trades))
    degradation = at_most(
        "safety.sharpe_degradation",
        sharpe_degradation_pct(reference_sharpe, perf.sharpe),
        limits.max_sharpe_degradation_pct,
        "%",
    )
    win_rate = at_least("safety.win_rate", perf.win_rate_pct, limits.min_win_rate_pct, "%")
    if not trades.passed:
        why = f"{perf.n_trades} of {limits.min_trades} trades"
        degradation = pending_check(degradation, why)
        win_rate = pending_check(win_rate, why)
        if can_wait:
            trades = pending_check(
                trades, f"{perf.n_trades} trades so far, needs {limits.min_trades}"
            )
    return (
        at_most("safety.daily_loss", loss, limits.max_daily_loss_usd, "$"),
        at_most("safety.max_drawdown", perf.max_drawdown_pct, limits.max_drawdown_pct, "%"),
        trades,
        degradation,
        win_rate,
    )


def safety_gate(
    perf: Performance, *, reference_sharpe: float, limits: SafetyLimits, window: str
) -> GateDecision:
    """The safety limits alone, for the current (FULL) set after its promotion. FAIL is a breach
    (roll back); WAIT means the statistical limits need more trades."""
    checks = safety_checks(perf, reference_sharpe=reference_sharpe, limits=limits, can_wait=True)
    return GateDecision(
        stage=Stage.FULL,
        outcome=outcome_of(checks),
        window=window,
        metrics=perf.as_dict(),
        checks=checks,
    )
