"""The deployment recommendation of a cycle: one verdict per regime, in plain language.

Pure: the functions here and in ``ffe_dagster.core.reporting.curriculum_report`` read only what
they are given, the level results (``ffe_dagster.core.study.level_result.LevelResult``, as
``outcome_result`` or ``skipped_level_result`` builds them) and, optionally, this cycle's promotion
decision per regime::

    {"BULL": {"level": 1, "version": 3, "promoted": True, "reason": "COLD passed on ...",
              "stage": "COLD", "model_version": 7}, ...}

``promoted`` says whether the regime's candidate passed the gate named by ``stage`` (default
COLD). Instead of ``promoted`` a decision may carry the promotion asset's ``decision`` word:
``advance`` or ``promote`` count as passed, ``skip`` as "nothing judged this cycle", anything
else (``reject``) as failed. ``model_version`` (the MLflow registry version) is optional.

Which regimes a level promotes to comes from ``promotes`` (curriculum.yaml ``promotes``) or, when
that is not given, from the ``level`` of each promotion decision.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ffe_dagster.core.promotion.records import Action, RegimeAction
from ffe_dagster.core.reporting.markdown import format_value, join_phrases
from ffe_dagster.core.study.level_result import LevelResult

PromotionSummary = Mapping[str, Mapping[str, Any]]

# criterion -> (what it is called in a sentence, metric label, unit, failing relation)
_CRITERIA: Mapping[str, tuple[str, str, str, str]] = {
    "min_win_rate_pct": ("win-rate", "win rate", "%", "<"),
    "min_sharpe": ("Sharpe", "Sharpe", "", "<"),
    "max_drawdown_pct": ("max-drawdown", "max drawdown", "%", ">"),
    "min_profit_factor": ("profit-factor", "profit factor", "", "<"),
    "min_total_return_pct": ("positive-return", "total return", "%", "<="),
    "stress_min_total_return_pct": ("stress", "worst stress-period return", "%", "<"),
    "min_deflated_sharpe": ("deflated-Sharpe", "deflated Sharpe", "", "<"),
    "max_pbo": ("over-fitting (PBO)", "PBO", "", ">"),
    "min_walk_forward_efficiency": ("walk-forward", "walk-forward efficiency", "", "<"),
}


@dataclass(frozen=True, slots=True)
class RegimeVerdict:
    """Whether one regime's parameters should be deployed, and the sentence that says why."""

    regime: str
    level: int
    deploy: bool
    version: int | None
    sentence: str


def regime_verdicts(
    level_results: Sequence[LevelResult],
    promotion_summary: PromotionSummary | None = None,
    *,
    promotes: Mapping[int, Sequence[str]] | None = None,
    min_walk_forward_efficiency: float = 0.5,
) -> list[RegimeVerdict]:
    """One verdict per regime (in the order of their levels).

    A regime is deployable only when its level passed every test criterion and, when promotion
    decisions are given, a candidate passed the COLD gate; the COLD gate alone is not enough.
    Deployable sets carry cautions: a walk-forward efficiency below
    ``min_walk_forward_efficiency`` and a cost scenario under which the test return turns negative.
    """
    by_level = {r.level: r for r in level_results}
    verdicts: list[RegimeVerdict] = []
    for level, names in sorted(regimes_by_level(promotes, promotion_summary).items()):
        for regime in names:
            decision = (promotion_summary or {}).get(regime)
            verdicts.append(
                _verdict(regime, level, by_level.get(level), decision, min_walk_forward_efficiency)
            )
    return verdicts


def deployment_recommendation(
    level_results: Sequence[LevelResult],
    promotion_summary: PromotionSummary | None = None,
    *,
    promotes: Mapping[int, Sequence[str]] | None = None,
    min_walk_forward_efficiency: float = 0.5,
) -> str:
    """A deployment recommendation in plain language: a summary line, then one sentence (or a
    few) per regime, derived only from the data passed in (see ``regime_verdicts``)."""
    verdicts = regime_verdicts(
        level_results,
        promotion_summary,
        promotes=promotes,
        min_walk_forward_efficiency=min_walk_forward_efficiency,
    )
    if not verdicts:
        return (
            "No recommendation: no level promotes to a regime (give `promotes` or the "
            "promotion decisions).\n"
        )
    deploy = [_versioned(v) for v in verdicts if v.deploy]
    hold = [v.regime for v in verdicts if not v.deploy]
    if not deploy:
        needed = (
            "both their level's criteria and the COLD gate"
            if promotion_summary
            else "their level's criteria"
        )
        summary = f"Deploy nothing this cycle: no regime's parameters passed {needed}."
    else:
        verb = "Deploy" if promotion_summary else "Candidates for deployment"
        summary = f"{verb}: {', '.join(deploy)}."
        if hold:
            summary += f" Do not deploy: {', '.join(hold)}."
    lines = [summary, "", *(f"- {v.sentence}" for v in verdicts)]
    return "\n".join(lines) + "\n"


def _versioned(v: RegimeVerdict) -> str:
    return f"{v.regime} v{v.version}" if v.version is not None else v.regime


def regimes_by_level(
    promotes: Mapping[int, Sequence[str]] | None, summary: PromotionSummary | None
) -> dict[int, list[str]]:
    if promotes is not None:
        return {int(k): list(v) for k, v in promotes.items() if v}
    out: dict[int, list[str]] = {}
    for regime, decision in (summary or {}).items():
        if decision.get("level") is not None:
            out.setdefault(int(decision["level"]), []).append(regime)
    return out


def _verdict(
    regime: str,
    level: int,
    result: LevelResult | None,
    decision: Mapping[str, Any] | None,
    min_wfe: float,
) -> RegimeVerdict:
    passed_gate = gate_passed(decision)
    promoted = passed_gate is True
    version = decision.get("version") if decision and promoted else None
    named = f"{regime} v{version}" if version is not None else f"{regime} parameters"
    reason = (decision or {}).get("reason") or "no reason recorded"
    gate = f"{(decision or {}).get('stage') or 'COLD'} gate ({reason})"

    def no(sentence: str) -> RegimeVerdict:
        return RegimeVerdict(regime, level, False, version, sentence)

    if decision is not None and passed_gate is None:
        return no(f"Do not deploy new {regime} parameters: none was judged this cycle ({reason}).")
    if result is None:
        return no(f"Do not deploy {named}: level {level} has no result.")
    if result.skipped:
        why = "; ".join(result.progression.reasons if result.progression else ()) or "skipped"
        return no(
            f"Do not deploy {named}: level {level} was not run ({why}), so its criteria "
            "were never tested."
        )
    if not result.passed:
        failures = failure_phrases(result)
        why = (
            f"level {level} failed {join_phrases(failures)}"
            if failures
            else f"level {level} chose no parameter set (none was feasible on validation)"
        )
        if decision is None:
            return no(f"Do not deploy {named}: {why}.")
        if promoted:
            return no(
                f"Do not deploy {named}: {why}. It passed the {gate}, which alone is not enough: "
                f"keep it in paper trading until level {level} passes."
            )
        return no(f"Do not deploy {named}: {why}; the {gate} rejected it too.")
    count = len(result.criteria)
    evidence = (
        f"level {level} passed "
        + ("its test criterion" if count == 1 else f"all {count} test criteria")
        + f" ({_headline(result.test)})"
    )
    if decision is not None and not promoted:
        return no(
            f"Do not deploy new {regime} parameters: {evidence}, but the {gate} rejected every "
            "candidate. Keep the current version."
        )
    if decision is None:
        sentence = f"{regime}: {evidence}; its parameters can go to the COLD gate."
    else:
        sentence = f"Deploy {named}: {evidence}, and the candidate passed the {gate}."
    sentence = " ".join([sentence, *_cautions(result, min_wfe)])
    return RegimeVerdict(regime, level, True, version, sentence)


def gate_passed(decision: Mapping[str, Any] | None) -> bool | None:
    # True / False for a candidate that passed / failed the gate, None when none was judged.
    if decision is None:
        return False
    if "promoted" in decision:
        return bool(decision["promoted"])
    word = decision.get("decision")
    if word == RegimeAction.SKIP:
        return None
    return word in (Action.ADVANCE, Action.PROMOTE)


def failure_phrases(result: LevelResult) -> list[str]:
    phrases: list[str] = []
    for c in result.criteria:
        if c.passed:
            continue
        noun, _, unit, relation = _CRITERIA.get(c.name, (c.name, c.name, "", "vs"))
        if c.note:  # not measured (e.g. no out-of-sample stress bars): say so
            phrases.append(f"its {noun} criterion ({c.note})")
            continue
        value = format_value(c.value, unit)
        phrases.append(f"its {noun} criterion ({value} {relation} {c.threshold:g}{unit})")
    return phrases


def _cautions(result: LevelResult, min_wfe: float) -> list[str]:
    analysis = result.analysis
    out: list[str] = []
    wf = analysis.get("walk_forward")
    if wf and wf.get("walk_forward_efficiency") is not None:
        wfe = float(wf["walk_forward_efficiency"])
        if wfe < min_wfe:
            out.append(
                f"Caution: walk-forward efficiency is {wfe:.2f} (< {min_wfe:g}): out of sample "
                f"the optimization kept {wfe:.0%} of its in-sample Sharpe."
            )
    losing = [r for r in analysis.get("cost_sensitivity") or [] if r["total_return_pct"] < 0]
    if losing:
        worst = min(losing, key=lambda r: r["total_return_pct"])
        out.append(
            f"Caution: the test return turns negative in {len(losing)} of "
            f"{len(analysis['cost_sensitivity'])} cost scenarios (worst "
            f"{worst['total_return_pct']:.2f}% at fee {worst['fee_pct']:g}% and slippage "
            f"{worst['slippage_pct']:g}% per side)."
        )
    return out


def _headline(test: Mapping[str, float]) -> str:
    parts = []
    for key, label in (
        ("win_rate_pct", "win rate"),
        ("sharpe", "Sharpe"),
        ("max_drawdown_pct", "max drawdown"),
        ("total_return_pct", "return"),
    ):
        if key in test:
            unit = "%" if key.endswith("pct") else ""
            parts.append(f"{label} {format_value(float(test[key]), unit)}")
    return ", ".join(parts)
