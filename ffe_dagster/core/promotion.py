"""Promotion decisions: the COLD gate and the choice of a candidate per regime.

COLD backtests a candidate on recent bars no study saw. Seven days of hourly bars often hold too
few trades to judge, so the window grows through ``window_days`` until it holds ``min_trades``;
the decision is taken on the last window tried, and each threshold is recorded with its reason.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from ffe_dagster.core.evaluation import Params
from ffe_dagster.core.metrics import Metrics


class PromotionRegime(StrEnum):
    """The sets the trading system switches between."""

    BULL = "BULL"
    BEAR = "BEAR"
    SIDEWAYS = "SIDEWAYS"
    DEFAULT = "DEFAULT"


@dataclass(frozen=True, slots=True)
class ColdGateConfig:
    """Thresholds of the COLD gate (SPEC section 5)."""

    window_days: tuple[int, ...] = (7, 14, 30)
    min_sharpe: float = 0.5
    min_win_rate_pct: float = 40.0
    min_trades: int = 20


@dataclass(frozen=True, slots=True)
class GateCheck:
    """One threshold of a gate, measured."""

    name: str
    value: float
    threshold: float
    passed: bool
    reason: str


@dataclass(frozen=True, slots=True)
class GateDecision:
    """A gate's verdict on one candidate."""

    stage: str
    passed: bool
    window_days: int
    metrics: Mapping[str, float]
    checks: tuple[GateCheck, ...] = field(default=())

    @property
    def reason(self) -> str:
        """All failed checks in one sentence, or a pass statement."""
        failed = [c.reason for c in self.checks if not c.passed]
        if not failed:
            return f"{self.stage} passed on the last {self.window_days} days"
        return f"{self.stage} failed on the last {self.window_days} days: " + "; ".join(failed)


def _check(name: str, value: float, threshold: float, at_least: bool, unit: str) -> GateCheck:
    passed = value >= threshold if at_least else value > threshold
    relation = ">=" if at_least else ">"
    verdict = "ok" if passed else "too low"
    return GateCheck(
        name=name,
        value=value,
        threshold=threshold,
        passed=passed,
        reason=f"{name} {value:.3g}{unit} ({verdict}; needs {relation} {threshold:g}{unit})",
    )


def cold_gate(evaluate_days: Callable[[int], Metrics], config: ColdGateConfig) -> GateDecision:
    """Judge a candidate on the most recent unseen days.

    ``evaluate_days(d)`` backtests the candidate on the last ``d`` days of the hold-out.
    """
    if not config.window_days:
        raise ValueError("the COLD gate needs at least one window length")
    days = config.window_days[0]
    metrics = evaluate_days(days)
    for days in config.window_days[1:]:
        if metrics.n_trades >= config.min_trades:
            break
        metrics = evaluate_days(days)
    checks = (
        _check("sharpe", metrics.sharpe, config.min_sharpe, True, ""),
        _check("win_rate", metrics.win_rate_pct, config.min_win_rate_pct, True, "%"),
        _check("pnl", metrics.total_return_pct, 0.0, False, "%"),
        _check("trades", float(metrics.n_trades), float(config.min_trades), True, ""),
    )
    return GateDecision(
        stage="COLD",
        passed=all(c.passed for c in checks),
        window_days=days,
        metrics=metrics.as_dict(),
        checks=checks,
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


def choose_for_regime(
    regime: PromotionRegime,
    level: int,
    candidates: Sequence[Params],
    gate: Callable[[Params], GateDecision],
) -> RegimeChoice:
    """Walk the level's candidates in validation order and keep the first that passes ``gate``."""
    last: GateDecision | None = None
    for tried, params in enumerate(candidates, start=1):
        last = gate(params)
        if last.passed:
            return RegimeChoice(regime, level, params, last, tried, last.reason)
    reason = (
        f"no candidate of level {level} passed: {last.reason}"
        if last
        else f"level {level} produced no candidate"
    )
    return RegimeChoice(regime, level, None, last, len(candidates), reason)
