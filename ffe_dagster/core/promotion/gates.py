"""The COLD, WARM and LIMITED gates, and the walk through a level's candidates.

"Better than the current parameters by x %" (WARM, LIMITED) compares both sets on the same bars
or hours. When the current Sharpe there is zero or negative, a percentage of it means nothing
(1.10 x -1.0 = -1.1 would let a worse set through), so the candidate then needs a positive
Sharpe. Without a current version the baseline is staying flat: Sharpe 0, win rate 0 %.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ffe_dagster.core.promotion.checks import (
    REL_TOL,
    GateCheck,
    GateDecision,
    above,
    at_least,
    at_most,
    outcome_of,
    pending_check,
)
from ffe_dagster.core.promotion.config import (
    ColdGateConfig,
    LimitedGateConfig,
    PromotionRegime,
    SafetyLimits,
    Stage,
    WarmGateConfig,
)
from ffe_dagster.core.promotion.performance import Performance, flat
from ffe_dagster.core.promotion.safety import safety_checks
from ffe_dagster.core.study.evaluation import Params


def improvement_check(name: str, candidate: float, current: float, uplift_pct: float) -> GateCheck:
    """``candidate`` at least ``uplift_pct`` % above a positive ``current``; above zero when
    ``current`` is zero or negative (see the module notes)."""
    if current > 0.0:
        threshold = current + current * uplift_pct / 100.0
        passed = candidate >= threshold - REL_TOL * threshold
        needs = f"needs >= {threshold:.6g}, current {current:.6g} + {uplift_pct:g} %"
    else:
        threshold = 0.0
        passed = candidate > 0.0
        needs = f"needs > 0 because current {current:.6g} is not positive"
    verdict = "ok" if passed else "too low"
    return GateCheck(
        name=name,
        value=candidate,
        threshold=threshold,
        passed=passed,
        reason=f"{name} {candidate:.6g} ({verdict}; {needs})",
    )


def cold_gate(
    evaluate_days: Callable[[int], Performance],
    config: ColdGateConfig,
    *,
    reference_sharpe: float,
    limits: SafetyLimits,
) -> GateDecision:
    """Judge a candidate on the most recent unseen days.

    ``evaluate_days(d)`` backtests the candidate on the last ``d`` days of the hold-out. Seven
    days of hourly bars often hold too few trades, so the window grows through
    ``config.window_days`` until it holds ``config.min_trades``; the decision is taken on the last
    window tried. COLD judges history that exists already, so it never waits.
    """
    if not config.window_days:
        raise ValueError("the COLD gate needs at least one window length")
    days = config.window_days[0]
    perf = evaluate_days(days)
    for longer in config.window_days[1:]:
        if perf.n_trades >= config.min_trades:
            break
        days, perf = longer, evaluate_days(longer)
    checks = (
        at_least("sharpe", perf.sharpe, config.min_sharpe),
        at_least("win_rate", perf.win_rate_pct, config.min_win_rate_pct, "%"),
        above("pnl", perf.pnl_usd, 0.0, "$"),
        at_least("trades", float(perf.n_trades), float(config.min_trades)),
        *safety_checks(perf, reference_sharpe=reference_sharpe, limits=limits, can_wait=False),
    )
    return GateDecision(
        stage=Stage.COLD,
        outcome=outcome_of(checks),
        window=f"the last {days} days",
        metrics={**perf.as_dict(), "window_days": float(days)},
        checks=checks,
    )


def _elapsed(perf: Performance, min_hours: float) -> tuple[GateCheck, bool]:
    """The elapsed-time check, and whether the window is complete."""
    window = at_least("window_hours", perf.hours, min_hours, " h")
    if window.passed:
        return window, True
    return pending_check(window, f"{perf.hours:.1f} of {min_hours:g} h so far"), False


@dataclass(frozen=True, slots=True)
class _VersusCurrent:
    """What WARM and LIMITED share: the baseline, the elapsed-time, Sharpe and safety checks,
    and why the comparison is not judged yet (None once it is)."""

    base: Performance
    window: GateCheck
    sharpe: GateCheck
    safety: tuple[GateCheck, ...]
    why: str | None


def _versus_current(
    candidate: Performance,
    current: Performance | None,
    *,
    reference_sharpe: float,
    min_hours: float,
    max_wait_hours: float,
    sharpe_uplift_pct: float,
    limits: SafetyLimits,
) -> _VersusCurrent:
    """The checks WARM and LIMITED make alike; the Sharpe check is pending until the window is
    complete and holds ``limits.min_trades`` trades."""
    base = current or flat(candidate.hours)
    window, complete = _elapsed(candidate, min_hours)
    # Past the longest wait a missing trade count fails instead of waiting for ever.
    expired = candidate.hours >= max_wait_hours
    enough = candidate.n_trades >= limits.min_trades
    sharpe = improvement_check(
        "sharpe_vs_current", candidate.sharpe, base.sharpe, sharpe_uplift_pct
    )
    why = None
    if not (enough and complete):
        why = "the window is not complete" if enough else f"{candidate.n_trades} trades so far"
        sharpe = pending_check(sharpe, why)
    safety = safety_checks(
        candidate, reference_sharpe=reference_sharpe, limits=limits, can_wait=not expired
    )
    return _VersusCurrent(base, window, sharpe, safety, why)


def warm_gate(
    candidate: Performance,
    current: Performance | None,
    *,
    reference_sharpe: float,
    config: WarmGateConfig,
    limits: SafetyLimits,
) -> GateDecision:
    """Judge paper trading of a candidate against the current set on the same new bars.

    ``candidate`` and ``current`` are ``paper_performance`` on the bars after the candidate was
    made (``current`` None: no current version, the baseline is flat). The candidate waits until
    the bars cover ``config.min_hours`` and hold ``limits.min_trades`` trades; past
    ``config.max_wait_hours`` of bars it fails instead of waiting for ever.
    """
    vs = _versus_current(
        candidate,
        current,
        reference_sharpe=reference_sharpe,
        min_hours=config.min_hours,
        max_wait_hours=config.max_wait_hours,
        sharpe_uplift_pct=config.sharpe_uplift_pct,
        limits=limits,
    )
    win_rate = at_least(
        "win_rate_vs_current",
        candidate.win_rate_pct,
        vs.base.win_rate_pct + config.win_rate_margin_pts,
        "%",
    )
    if vs.why is not None:
        win_rate = pending_check(win_rate, vs.why)
    checks = (
        vs.window,
        vs.sharpe,
        win_rate,
        at_most("drawdown", candidate.max_drawdown_pct, config.max_drawdown_pct, "%"),
        *vs.safety,
    )
    return GateDecision(
        stage=Stage.WARM,
        outcome=outcome_of(checks),
        window=f"{candidate.hours:.1f} h of bars after the candidate was made",
        metrics=candidate.as_dict(),
        checks=checks,
        baseline=vs.base.as_dict(),
    )


def limited_gate(
    candidate: Performance,
    current: Performance | None,
    *,
    reference_sharpe: float,
    config: LimitedGateConfig,
    limits: SafetyLimits,
) -> GateDecision:
    """Judge live trading with ``config.capital_fraction`` of the capital against the current set.

    ``candidate`` and ``current`` are ``live_performance`` over the same hours since the version
    entered LIMITED. The realized loss is judged at once; the rest once ``config.min_hours`` have
    passed and ``limits.min_trades`` trades closed (the candidate waits until then, at most
    ``config.max_wait_hours``).
    """
    vs = _versus_current(
        candidate,
        current,
        reference_sharpe=reference_sharpe,
        min_hours=config.min_hours,
        max_wait_hours=config.max_wait_hours,
        sharpe_uplift_pct=config.sharpe_uplift_pct,
        limits=limits,
    )
    wins = at_least("winning_trades", float(candidate.n_wins), float(config.min_winning_trades))
    if vs.why is not None and not wins.passed:
        wins = pending_check(wins, vs.why)
    checks = (
        vs.window,
        vs.sharpe,
        wins,
        at_most("realized_loss", max(0.0, -candidate.pnl_usd), config.max_realized_loss_usd, "$"),
        *vs.safety,
    )
    return GateDecision(
        stage=Stage.LIMITED,
        outcome=outcome_of(checks),
        window=f"{candidate.hours:.1f} h of live trading",
        metrics=candidate.as_dict(),
        checks=checks,
        baseline=vs.base.as_dict(),
    )


@dataclass(frozen=True, slots=True)
class RegimeChoice:
    """The outcome for one regime: the first candidate that passed, or why none did."""

    regime: PromotionRegime
    level: int
    params: Params | None
    decision: GateDecision | None
    tried: int
    reason: str
    index: int | None = None  # position of the chosen candidate in the list


def choose_for_regime(
    regime: PromotionRegime,
    level: int,
    candidates: Sequence[Params],
    gate: Callable[[int, Params], GateDecision],
) -> RegimeChoice:
    """Walk the level's candidates in validation order and keep the first that passes ``gate``
    (called with the candidate's position and its parameters)."""
    last: GateDecision | None = None
    for index, params in enumerate(candidates):
        last = gate(index, params)
        if last.passed:
            return RegimeChoice(regime, level, params, last, index + 1, last.reason, index)
    reason = (
        f"no candidate of level {level} passed: {last.reason}"
        if last
        else f"level {level} produced no candidate"
    )
    return RegimeChoice(regime, level, None, last, len(candidates), reason)
