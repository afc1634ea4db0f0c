"""What a notification says: one JSON schema for every decision that matters, its Slack/Teams
``text`` line, the parameter diff behind it, and the retry schedule of its delivery.

Pure: the outbox (``resources/outbox.py``) stores what ``decision_notification`` and friends
build, and the delivery sensor (``sensors/notify.py``) adds the links and posts it. The schema
is documented in ``docs/notifications.md``.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from ffe_dagster.core.promotion.config import Stage
from ffe_dagster.core.promotion.records import Action
from ffe_dagster.core.study.level_result import LevelResult

SCHEMA = "ffe.notification/1"
ARROW = "\u2192"
DASH = " \u2014 "


class Kind(StrEnum):
    """What a notification announces."""

    PROMOTE = "promote"  # a version entered WARM, LIMITED or FULL
    REJECT = "reject"  # a version failed the gate of its stage
    ROLLBACK = "rollback"  # the current version was taken back, an earlier one restored
    SUSPEND = "suspend"  # the current version was taken back with nothing to return to
    VERDICT_CHANGE = "verdict_change"  # a level passed where it failed before, or the reverse
    RUN_FAILURE = "run_failure"  # a Dagster run of this code location failed


@dataclass(frozen=True, slots=True)
class ParamChange:
    """One parameter whose value differs between the version before and the version after."""

    name: str
    old: Any
    new: Any


@dataclass(frozen=True, slots=True)
class MetricCheck:
    """A key metric against its limit, as the gate judged it."""

    name: str
    value: float
    limit: float
    passed: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Notification:
    """One notification. ``key`` is the idempotency key: one per decision, sent with every
    delivery attempt so a receiver can drop a repeat."""

    key: str
    kind: Kind
    title: str
    reason: str
    trigger: str
    at: datetime
    regime: str | None = None
    level: int | None = None
    version: int | None = None
    from_stage: str | None = None
    to_stage: str | None = None
    version_before: int | None = None
    version_after: int | None = None
    changes: tuple[ParamChange, ...] = ()
    checks: tuple[MetricCheck, ...] = ()
    run_id: str | None = None
    mlflow_run_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The one-line summary for Slack / Teams (their webhooks show the ``text`` field)."""
        return render_text(self)

    def to_payload(self) -> dict[str, Any]:
        """The JSON object stored in the outbox (``links`` are added when it is delivered)."""
        return {
            "schema": SCHEMA,
            "key": self.key,
            "kind": self.kind.value,
            "title": self.title,
            "text": self.text,
            "regime": self.regime,
            "level": self.level,
            "version": self.version,
            "from_stage": self.from_stage,
            "to_stage": self.to_stage,
            "version_before": self.version_before,
            "version_after": self.version_after,
            "changes": [{"name": c.name, "old": c.old, "new": c.new} for c in self.changes],
            "checks": [
                {
                    "name": c.name,
                    "value": c.value,
                    "limit": c.limit,
                    "passed": c.passed,
                    "reason": c.reason,
                }
                for c in self.checks
            ],
            "reason": self.reason,
            "trigger": self.trigger,
            "run_id": self.run_id,
            "mlflow_run_id": self.mlflow_run_id,
            "at": self.at.isoformat(),
            "details": dict(self.details),
        }


@dataclass(frozen=True, slots=True)
class UiLinks:
    """Base URLs of the Dagster and MLflow UIs the links point into."""

    dagster: str
    mlflow: str

    def for_payload(self, payload: Mapping[str, Any]) -> dict[str, str]:
        """``dagster_run`` and ``mlflow_run`` links for the run ids ``payload`` names."""
        out: dict[str, str] = {}
        if payload.get("run_id"):
            out["dagster_run"] = f"{self.dagster.rstrip('/')}/runs/{payload['run_id']}"
        if payload.get("mlflow_run_id"):
            out["mlflow_run"] = f"{self.mlflow.rstrip('/')}/#/runs/{payload['mlflow_run_id']}"
        return out


def delivered_payload(payload: Mapping[str, Any], links: UiLinks) -> dict[str, Any]:
    """The stored ``payload`` as it is posted: with its ``links``."""
    return {**payload, "links": links.for_payload(payload)}


def param_changes(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> tuple[ParamChange, ...]:
    """The parameters whose value differs, by name; a side that is missing counts as None."""
    old, new = dict(before or {}), dict(after or {})
    return tuple(
        ParamChange(name, old.get(name), new.get(name))
        for name in sorted(old.keys() | new.keys())
        if old.get(name) != new.get(name)
    )


def metric_checks(checks: Sequence[Mapping[str, Any]] | None) -> tuple[MetricCheck, ...]:
    """The audit trail's check dicts (``GateDecision.checks_as_dicts``) as typed checks; a check
    not judged yet (``waiting``) is left out."""
    return tuple(
        MetricCheck(
            name=str(c["name"]),
            value=float(c["value"]),
            limit=float(c["threshold"]),
            passed=bool(c["passed"]),
            reason=str(c.get("reason", "")),
        )
        for c in checks or ()
        if not c.get("waiting")
    )


@dataclass(frozen=True, slots=True)
class DecisionFacts:
    """What the registry knows about one decision, read inside its transaction."""

    transition_id: int
    regime: str
    action: Action
    version: int
    from_stage: Stage
    to_stage: Stage
    version_before: int | None
    version_after: int | None
    params_before: Mapping[str, Any] | None  # of ``version_before`` (None when there is none)
    params_after: Mapping[str, Any] | None  # of the version decided on; None for a suspension
    reason: str
    trigger: str
    run_id: str | None
    at: datetime
    level: int | None = None
    mlflow_run_id: str | None = None
    metrics: Mapping[str, Any] | None = None
    checks: Sequence[Mapping[str, Any]] | None = None


_NOTIFIED = {
    Action.ADVANCE: Kind.PROMOTE,
    Action.PROMOTE: Kind.PROMOTE,
    Action.REJECT: Kind.REJECT,
    Action.ROLLBACK: Kind.ROLLBACK,
    Action.SUSPEND: Kind.SUSPEND,
}
_TITLES = {
    Kind.PROMOTE: "Parameter Optimization Complete",
    Kind.REJECT: "Parameter Optimization Rejected",
    Kind.ROLLBACK: "Parameter Rollback Triggered",
    Kind.SUSPEND: "Parameters Suspended",
    Kind.VERDICT_CHANGE: "Level Verdict Changed",
    Kind.RUN_FAILURE: "Run Failed",
}


def decision_notification(facts: DecisionFacts) -> Notification | None:
    """The notification of one registry decision, or None for a decision nobody needs to hear
    about (a ``wait``: nothing changed)."""
    kind = _NOTIFIED.get(facts.action)
    if kind is None:
        return None
    # A rejection shows what was proposed against what stays; a suspension what was taken back.
    changes = param_changes(facts.params_before, facts.params_after)
    sharpe = _sharpe_pair(facts.metrics)
    return Notification(
        key=f"decision-{facts.regime}-v{facts.version}-{facts.action}-{facts.transition_id}",
        kind=kind,
        title=_TITLES[kind],
        reason=facts.reason,
        trigger=facts.trigger,
        at=facts.at,
        regime=facts.regime,
        level=facts.level,
        version=facts.version,
        from_stage=facts.from_stage,
        to_stage=facts.to_stage,
        version_before=facts.version_before,
        version_after=facts.version_after,
        changes=changes,
        checks=metric_checks(facts.checks),
        run_id=facts.run_id,
        mlflow_run_id=facts.mlflow_run_id,
        details={"sharpe": sharpe} if sharpe else {},
    )


def _sharpe_pair(metrics: Mapping[str, Any] | None) -> dict[str, float] | None:
    """The candidate's and the current set's Sharpe when the gate measured both."""
    if not metrics or "sharpe" not in metrics or "current_sharpe" not in metrics:
        return None
    new, old = float(metrics["sharpe"]), float(metrics["current_sharpe"])
    if not (math.isfinite(new) and math.isfinite(old)):
        return None
    return {"candidate": new, "current": old, "improvement": new - old}


def verdict_notification(
    *,
    level: int,
    regimes: Sequence[str],
    before: str,
    after: str,
    failed: Sequence[str],
    result_run_id: str | None,
    mlflow_run_id: str | None,
    at: datetime,
) -> Notification:
    """A level's verdict (passed, did not pass, skipped) changed between two of its runs;
    ``failed`` are the criteria it missed now. Keyed by the run that produced the new verdict."""
    reason = f"level {level}: {before} {ARROW} {after}"
    if failed:
        reason += "; missed " + ", ".join(failed)
    return Notification(
        key=f"verdict-L{level}-{result_run_id}",
        kind=Kind.VERDICT_CHANGE,
        title=_TITLES[Kind.VERDICT_CHANGE],
        reason=reason,
        trigger="level-run",
        at=at,
        level=level,
        run_id=result_run_id,
        mlflow_run_id=mlflow_run_id,
        details={"regimes": list(regimes), "before": before, "after": after},
    )


def level_verdict(result: LevelResult) -> str:
    """A stored level result's verdict: ``passed``, ``did not pass`` or ``skipped``."""
    if result.skipped:
        return "skipped"
    return "passed" if result.passed else "did not pass"


def verdict_change(
    *,
    level: int,
    regimes: Sequence[str],
    previous: LevelResult | None,
    latest: LevelResult,
    latest_run_id: str | None,
    at: datetime,
) -> Notification | None:
    """The notification when ``latest`` (a level's newest stored result) has another verdict
    than ``previous`` (the one before it); None when it is the same or there is no previous."""
    if previous is None:
        return None
    before, after = level_verdict(previous), level_verdict(latest)
    if before == after:
        return None
    failed = [
        f"{c.name} {c.value:.3g} (needs {c.threshold:g})" for c in latest.criteria if not c.passed
    ]
    return verdict_notification(
        level=level,
        regimes=regimes,
        before=before,
        after=after,
        failed=failed,
        result_run_id=latest_run_id,
        mlflow_run_id=latest.mlflow_run_id,
        at=at,
    )


def run_failure_notification(
    *, job: str, run_id: str, trigger: str, error: str, at: datetime
) -> Notification:
    """A failed Dagster run, keyed by its run id (a run fails once)."""
    return Notification(
        key=f"run-failure-{run_id}",
        kind=Kind.RUN_FAILURE,
        title=_TITLES[Kind.RUN_FAILURE],
        reason=error[:2000],
        trigger=trigger,
        at=at,
        run_id=run_id,
        details={"job": job},
    )


def _value(value: Any) -> str:
    if value is None:
        return "unset"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _changes_text(changes: Sequence[ParamChange]) -> str:
    return ", ".join(f"{c.name} ({_value(c.old)} {ARROW} {_value(c.new)})" for c in changes)


def _version(value: int | None) -> str:
    return "none" if value is None else f"v{value}"


def render_text(n: Notification) -> str:
    """``title — Regime: X — what changed — the evidence — the outcome``, one line."""
    parts = [n.title]
    if n.regime is not None:
        parts.append(f"Regime: {n.regime}")
    if n.kind is Kind.PROMOTE:
        parts.append(f"v{n.version} {n.from_stage} {ARROW} {n.to_stage}")
        if n.changes:
            parts.append(_changes_text(n.changes))
        sharpe = n.details.get("sharpe")
        if sharpe:
            parts.append(f"Sharpe improvement {sharpe['improvement']:+.2f}")
        parts.append(f"PROMOTED TO {n.to_stage}")
    elif n.kind is Kind.REJECT:
        failed = [c.reason for c in n.checks if not c.passed] or [n.reason]
        parts.append(f"v{n.version} at {n.from_stage}")
        parts.append("Reason: " + "; ".join(failed))
        parts.append(f"Keeping current parameters ({_version(n.version_before)})")
    elif n.kind is Kind.ROLLBACK:
        parts.append(_breach(n))
        parts.append(
            f"Reverted {_version(n.version_before)} {ARROW} {_version(n.version_after)}"
            f" ({n.trigger})"
        )
    elif n.kind is Kind.SUSPEND:
        parts.append(_breach(n))
        parts.append(f"{_version(n.version_before)} taken back; no earlier version to restore")
    elif n.kind is Kind.VERDICT_CHANGE:
        regimes = ", ".join(n.details.get("regimes", [])) or "no regime"
        parts[0:1] = [n.title, f"Level {n.level} ({regimes})"]
        parts.append(n.reason.split(": ", 1)[-1])
    else:
        parts.append(f"job {n.details.get('job')} run {(n.run_id or '')[:8]}")
        parts.append(n.reason.splitlines()[0][:300] if n.reason else "run failed")
    return DASH.join(parts)


def _breach(n: Notification) -> str:
    failed = [c.reason for c in n.checks if not c.passed]
    return "; ".join(failed) if failed else n.reason


def retry_delay_s(attempts: int, *, base_s: float, cap_s: float) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: ``base_s`` doubled each time,
    at most ``cap_s`` (a notification is retried until delivered, never dropped)."""
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    # 2**60 already exceeds any cap; the bound keeps the float finite.
    return min(cap_s, base_s * 2.0 ** min(attempts - 1, 60))


@dataclass(frozen=True, slots=True)
class DeliveryCounts:
    """The outbox at a glance: notifications delivered, waiting, and the attempts that failed.

    ``sent``: delivered; ``pending``: not delivered yet (never tried, or waiting for a retry);
    ``retried``: delivered or pending notifications that needed more than one attempt;
    ``failed``: failed attempts, all time."""

    sent: int
    pending: int
    retried: int
    failed: int
