"""A gate's verdict and the threshold checks it is made of.

Thresholds compare with a relative tolerance of 1e-9, so a value computed in floating point that
equals its boundary on paper (1.1 x 1.0) passes.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ffe_dagster.core.promotion.config import Outcome, Stage

REL_TOL = 1e-9


@dataclass(frozen=True, slots=True)
class GateCheck:
    """One threshold of a gate, measured. ``waiting`` means it could not be judged yet."""

    name: str
    value: float
    threshold: float
    passed: bool
    reason: str
    waiting: bool = False


@dataclass(frozen=True, slots=True)
class GateDecision:
    """A gate's verdict on one version, with the baseline it was compared with."""

    stage: Stage
    outcome: Outcome
    window: str
    metrics: Mapping[str, float]
    checks: tuple[GateCheck, ...] = ()
    baseline: Mapping[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return self.outcome is Outcome.PASS

    @property
    def reason(self) -> str:
        """The failed (or, when waiting, the pending) checks in one sentence."""
        if self.outcome is Outcome.PASS:
            return f"{self.stage} passed on {self.window}"
        if self.outcome is Outcome.FAIL:
            failed = [c.reason for c in self.checks if not c.passed and not c.waiting]
            return f"{self.stage} failed on {self.window}: " + "; ".join(failed)
        pending = [c.reason for c in self.checks if c.waiting]
        return f"{self.stage} waiting on {self.window}: " + "; ".join(pending)

    def checks_as_dicts(self) -> list[dict[str, object]]:
        """The checks as JSON-ready dicts (for the audit trail)."""
        return checks_as_dicts(self.checks)


def checks_as_dicts(checks: Sequence[GateCheck]) -> list[dict[str, object]]:
    """``checks`` as JSON-ready dicts, as the audit trail stores them."""
    return [
        {
            "name": c.name,
            "value": c.value,
            "threshold": c.threshold,
            "passed": c.passed,
            "waiting": c.waiting,
            "reason": c.reason,
        }
        for c in checks
    ]


def _fmt(value: float, unit: str) -> str:
    if unit == "$":
        return f"-${-value:.2f}" if value < 0 else f"${value:.2f}"
    return f"{value:.6g}{unit}"


def _compare(name: str, value: float, threshold: float, relation: str, unit: str = "") -> GateCheck:
    """``value`` against ``threshold`` with ``relation`` ">=", ">" or "<="."""
    tolerance = REL_TOL * abs(threshold)
    if relation == ">=":
        passed = value >= threshold - tolerance
    elif relation == ">":
        passed = value > threshold
    elif relation == "<=":
        passed = value <= threshold + tolerance
    else:
        raise ValueError(f"unknown relation {relation!r}")
    verdict = "ok" if passed else ("too high" if relation == "<=" else "too low")
    return GateCheck(
        name=name,
        value=value,
        threshold=threshold,
        passed=passed,
        reason=f"{name} {_fmt(value, unit)} ({verdict}; needs {relation} {_fmt(threshold, unit)})",
    )


def at_least(name: str, value: float, threshold: float, unit: str = "") -> GateCheck:
    return _compare(name, value, threshold, ">=", unit)


def above(name: str, value: float, threshold: float, unit: str = "") -> GateCheck:
    return _compare(name, value, threshold, ">", unit)


def at_most(name: str, value: float, threshold: float, unit: str = "") -> GateCheck:
    return _compare(name, value, threshold, "<=", unit)


def pending_check(check: GateCheck, why: str) -> GateCheck:
    """``check`` not judged yet: it neither passes nor fails the gate."""
    return GateCheck(
        name=check.name,
        value=check.value,
        threshold=check.threshold,
        passed=False,
        reason=f"{check.name} not judged ({why})",
        waiting=True,
    )


def outcome_of(checks: Sequence[GateCheck]) -> Outcome:
    if any(not c.passed and not c.waiting for c in checks):
        return Outcome.FAIL
    if any(c.waiting for c in checks):
        return Outcome.WAIT
    return Outcome.PASS
