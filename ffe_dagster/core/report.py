"""The cycle's curriculum report and deployment recommendation, as Markdown.

Pure: both functions read only what they are given, the level results as
``ffe_dagster.core.levels.outcome_to_dict`` (or ``skipped_level_result``) stores them and,
optionally, this cycle's promotion decision per regime::

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

LevelResult = Mapping[str, Any]
PromotionSummary = Mapping[str, Mapping[str, Any]]

_KIND = {"long": "long-only", "short": "short-only", "both": "mixed"}

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


def curriculum_report(
    level_results: Sequence[LevelResult],
    promotion_summary: PromotionSummary | None = None,
    *,
    promotes: Mapping[int, Sequence[str]] | None = None,
    max_param_shift: float = 0.5,
) -> str:
    """The curriculum report of one cycle as Markdown.

    Sections: the levels side by side (long-only vs short-only vs mixed: trials, validation and
    test Sharpe / win rate / drawdown / return, passed, progression) with the failed criteria;
    the chosen parameters per level and the regimes they promote to; the promotion decisions
    (when given); stability across levels (each parameter's move from the previous level's choice
    as a share of its search range, flagged above ``max_param_shift``); parameter importance; and
    the robustness results of the levels that ran them (deflated Sharpe, PBO, walk-forward,
    stress periods, cost sensitivity).
    """
    levels = sorted(level_results, key=lambda r: int(r["level"]))
    regimes = _regimes_by_level(promotes, promotion_summary)
    parts = [
        "# Curriculum report",
        "## Levels",
        _levels_table(levels),
        *_failures(levels),
        "## Chosen parameters",
        _parameters_table(levels, regimes),
    ]
    if promotion_summary:
        parts += ["## Promotion", _promotion_table(promotion_summary)]
    parts += ["## Stability across levels", *_stability(levels, max_param_shift)]
    importance = _importance_table(levels)
    if importance:
        parts += ["## Parameter importance (train Sharpe)", importance]
    parts += ["## Robustness", *_robustness(levels)]
    return "\n\n".join(parts) + "\n"


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
    by_level = {int(r["level"]): r for r in level_results}
    verdicts: list[RegimeVerdict] = []
    for level, names in sorted(_regimes_by_level(promotes, promotion_summary).items()):
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


def _regimes_by_level(
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
    passed_gate = _passed_gate(decision)
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
    if result.get("skipped"):
        why = "; ".join(result.get("progression", {}).get("reasons", [])) or "skipped"
        return no(
            f"Do not deploy {named}: level {level} was not run ({why}), so its criteria "
            "were never tested."
        )
    if not result.get("passed"):
        failures = _failure_phrases(result)
        why = (
            f"level {level} failed {_join(failures)}"
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
    count = len(result.get("criteria", []))
    evidence = (
        f"level {level} passed "
        + ("its test criterion" if count == 1 else f"all {count} test criteria")
        + f" ({_headline(result.get('test') or {})})"
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


def _passed_gate(decision: Mapping[str, Any] | None) -> bool | None:
    # True / False for a candidate that passed / failed the gate, None when none was judged.
    if decision is None:
        return False
    if "promoted" in decision:
        return bool(decision["promoted"])
    word = decision.get("decision")
    if word == "skip":
        return None
    return word in ("advance", "promote")


def _failure_phrases(result: LevelResult) -> list[str]:
    phrases: list[str] = []
    for c in result.get("criteria", []):
        if c.get("passed"):
            continue
        noun, _, unit, relation = _CRITERIA.get(c["name"], (c["name"], c["name"], "", "vs"))
        value = _value(float(c["value"]), unit)
        phrases.append(f"its {noun} criterion ({value} {relation} {c['threshold']:g}{unit})")
    return phrases


def _cautions(result: LevelResult, min_wfe: float) -> list[str]:
    analysis = result.get("analysis") or {}
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
            parts.append(f"{label} {_value(float(test[key]), '%' if key.endswith('pct') else '')}")
    return ", ".join(parts)


def _levels_table(levels: Sequence[LevelResult]) -> str:
    header = (
        "| level | kind | trials | val Sharpe | val win rate | val max DD | val return "
        "| test Sharpe | test win rate | test max DD | test return | passed | progression |"
    )
    rows = [header, "|" + "---|" * 13]
    for r in levels:
        val = (r.get("chosen") or {}).get("validation") or {}
        test = r.get("test") or {}
        progression = r.get("progression") or {}
        decision = progression.get("decision", "n/a")
        reasons = "; ".join(progression.get("reasons", []))
        cells = [
            f"L{r['level']} {r.get('name', '')}".strip(),
            _KIND.get(str(r.get("direction")), str(r.get("direction"))),
            _trials_cell(r),
            *_metric_cells(val),
            *_metric_cells(test),
            "skipped" if r.get("skipped") else ("yes" if r.get("passed") else "no"),
            f"{decision}: {reasons}" if reasons else decision,
        ]
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows)


def _trials_cell(r: LevelResult) -> str:
    tries = len(r.get("tries") or [])
    return f"{r.get('n_trials', 0)}" + (f" ({tries} tries)" if tries > 1 else "")


def _metric_cells(metrics: Mapping[str, float]) -> list[str]:
    return [
        _opt(metrics.get("sharpe"), ""),
        _opt(metrics.get("win_rate_pct"), "%"),
        _opt(metrics.get("max_drawdown_pct"), "%"),
        _opt(metrics.get("total_return_pct"), "%"),
    ]


def _failures(levels: Sequence[LevelResult]) -> list[str]:
    lines = []
    for r in levels:
        phrases = _failure_phrases(r)
        if phrases:
            lines.append(f"- Level {r['level']} failed {_join(phrases)}.")
        elif not r.get("skipped") and r.get("chosen") is None:
            lines.append(f"- Level {r['level']} chose no parameter set.")
    return ["Failed criteria (test period):\n\n" + "\n".join(lines)] if lines else []


def _level_header(r: LevelResult, regimes: Mapping[int, Sequence[str]]) -> str:
    kind = _KIND.get(str(r.get("direction")), str(r.get("direction")))
    targets = regimes.get(int(r["level"]))
    return f"L{r['level']} {kind}" + (f" → {', '.join(targets)}" if targets else "")


def _parameters_table(levels: Sequence[LevelResult], regimes: Mapping[int, Sequence[str]]) -> str:
    chosen = [((r.get("chosen") or {}).get("params") or {}) for r in levels]
    names: list[str] = []
    for params in chosen:
        names += [k for k in params if k not in names]
    if not names:
        return "No level chose a parameter set."
    header = "| parameter | " + " | ".join(_level_header(r, regimes) for r in levels) + " |"
    rows = [header, "|" + "---|" * (len(levels) + 1)]
    for name in names:
        cells = [_param(p.get(name)) for p in chosen]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _promotion_table(summary: PromotionSummary) -> str:
    rows = [
        "| regime | level | gate | passed | version | MLflow model version | reason |",
        "|---|---|---|---|---|---|---|",
    ]
    for regime, d in summary.items():
        passed = _passed_gate(d)
        cells = [
            regime,
            str(d.get("level", "n/a")),
            str(d.get("stage") or "COLD"),
            "not judged" if passed is None else ("yes" if passed else "no"),
            str(d.get("version") or "n/a"),
            str(d.get("model_version") or "n/a"),
            str(d.get("reason", "")),
        ]
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows)


def _stability(levels: Sequence[LevelResult], max_shift: float) -> list[str]:
    shifted = [r for r in levels if r.get("parameter_shift")]
    if not shifted:
        return ["No level had a previous level's choice to compare with."]
    names: list[str] = []
    for r in shifted:
        names += [k for k in r["parameter_shift"] if k not in names]
    header = "| parameter | " + " | ".join(f"L{r['level']} vs previous" for r in shifted) + " |"
    rows = [header, "|" + "---|" * (len(shifted) + 1)]
    for name in names:
        cells = []
        for r in shifted:
            value = r["parameter_shift"].get(name)
            text = "n/a" if value is None else f"{value:.0%}"
            cells.append(f"**{text}**" if value is not None and value > max_shift else text)
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    notes = []
    for r in shifted:
        shift: Mapping[str, float] = r["parameter_shift"]
        widest = max(shift, key=lambda k: shift[k])
        moved = f"{widest} moved {shift[widest]:.0%} of its search range"
        if shift[widest] > max_shift:
            notes.append(f"- Level {r['level']}: parameters swing ({moved}, > {max_shift:.0%}).")
        else:
            notes.append(f"- Level {r['level']}: stable (largest move: {moved}).")
    return [
        "Move of each parameter from the previous level's choice, as a share of its search range "
        f"(bold above {max_shift:.0%}):",
        "\n".join(rows),
        "\n".join(notes),
    ]


def _importance_table(levels: Sequence[LevelResult]) -> str:
    ranked = [r for r in levels if (r.get("analysis") or {}).get("importance")]
    if not ranked:
        return ""
    names: list[str] = []
    for r in ranked:
        imp: Mapping[str, float] = r["analysis"]["importance"]
        names += [k for k in sorted(imp, key=lambda k: -imp[k]) if k not in names]
    header = "| parameter | " + " | ".join(f"L{r['level']}" for r in ranked) + " |"
    rows = [header, "|" + "---|" * (len(ranked) + 1)]
    for name in names:
        cells = [_opt(r["analysis"]["importance"].get(name), "") for r in ranked]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _robustness(levels: Sequence[LevelResult]) -> list[str]:
    out: list[str] = []
    for r in levels:
        analysis = r.get("analysis") or {}
        if not any(k in analysis for k in ("overfitting", "walk_forward", "cost_sensitivity")):
            continue
        out.append(f"### Level {r['level']} {r.get('name', '')}".rstrip())
        out.append(_robustness_table(analysis))
        if r.get("stress"):
            out.append(_stress_table(r["stress"]))
        if analysis.get("cost_sensitivity"):
            out += _cost_summary(analysis["cost_sensitivity"])
    return out or ["No level ran the robustness tests."]


def _robustness_table(analysis: Mapping[str, Any]) -> str:
    over = analysis.get("overfitting") or {}
    wf = analysis.get("walk_forward") or {}
    rows = ["| measure | value |", "|---|---|"]
    if "deflated_sharpe" in over:
        rows.append(
            f"| deflated Sharpe ratio | {over['deflated_sharpe']:.3f} (train Sharpe "
            f"{over.get('train_sharpe', float('nan')):.2f} against an expected best of "
            f"{over.get('expected_max_sharpe', float('nan')):.2f} over "
            f"{over.get('dsr_trials', 'n/a')} trials) |"
        )
    if "pbo" in over:
        rows.append(
            f"| probability of backtest over-fitting | {over['pbo']:.3f} "
            f"({over.get('pbo_trials', 'n/a')} trials, "
            f"{over.get('pbo_combinations', 'n/a')} CSCV combinations) |"
        )
    if "walk_forward_efficiency" in wf:
        rows.append(f"| walk-forward efficiency | {wf['walk_forward_efficiency']:.2f} |")
    if "stitched_oos_sharpe" in wf:
        rows.append(
            f"| stitched out-of-sample Sharpe / return | {wf['stitched_oos_sharpe']:.2f} / "
            f"{wf.get('stitched_oos_return_pct', float('nan')):.2f}% "
            f"({len(wf.get('windows', []))} windows) |"
        )
    return "\n".join(rows)


def _stress_table(stress: Mapping[str, Mapping[str, float]]) -> str:
    rows = [
        "| stress period | return | Sharpe | max DD | win rate | trades |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in stress.items():
        cells = [
            name,
            _opt(m.get("total_return_pct"), "%"),
            _opt(m.get("sharpe"), ""),
            _opt(m.get("max_drawdown_pct"), "%"),
            _opt(m.get("win_rate_pct"), "%"),
            str(int(m["n_trades"])) if "n_trades" in m else "n/a",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _cost_summary(grid: Sequence[Mapping[str, float]]) -> list[str]:
    best = max(grid, key=lambda r: r["sharpe"])
    worst = min(grid, key=lambda r: r["sharpe"])
    positive = sum(r["total_return_pct"] > 0 for r in grid)
    summary = (
        f"Cost sensitivity (test period): Sharpe from {worst['sharpe']:.2f} (fee "
        f"{worst['fee_pct']:g}%, slippage {worst['slippage_pct']:g}%) to {best['sharpe']:.2f} "
        f"(fee {best['fee_pct']:g}%, slippage {best['slippage_pct']:g}%); the return is positive "
        f"in {positive} of {len(grid)} scenarios."
    )
    slips = sorted({r["slippage_pct"] for r in grid})
    fees = sorted({r["fee_pct"] for r in grid})
    cell = {(r["fee_pct"], r["slippage_pct"]): r for r in grid}
    rows = [
        "| fee per side | " + " | ".join(f"slippage {s:g}%" for s in slips) + " |",
        "|" + "---|" * (len(slips) + 1),
    ]
    for fee in fees:
        cells = []
        for s in slips:
            r = cell.get((fee, s))
            cells.append(
                "n/a" if r is None else f"{r['sharpe']:.2f} / {r['total_return_pct']:.2f}%"
            )
        rows.append(f"| {fee:g}% | " + " | ".join(cells) + " |")
    return [summary, "Sharpe / return per scenario:", "\n".join(rows)]


def _value(value: float, unit: str) -> str:
    return f"{value:.1f}%" if unit == "%" else f"{value:.2f}"


def _opt(value: float | None, unit: str) -> str:
    return "n/a" if value is None else _value(float(value), unit)


def _param(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool | str):
        return str(value)
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return f"{float(value):.3g}"


def _cell(text: str) -> str:
    # A pipe would end the Markdown cell early.
    return text.replace("|", "\\|").replace("\n", " ")


def _join(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
