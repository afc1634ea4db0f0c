"""The cycle's curriculum report, as Markdown.

Pure: it reads only the level results and, optionally, this cycle's promotion decision per regime,
in the shapes described in ``ffe_dagster.core.reporting.recommendation`` (which also holds the
deployment recommendation and the per-regime verdicts).
"""

from collections.abc import Mapping, Sequence
from typing import Any

from ffe_dagster.core.promotion.config import Stage
from ffe_dagster.core.reporting.markdown import (
    escape_cell,
    format_optional,
    format_param,
    join_phrases,
)
from ffe_dagster.core.reporting.recommendation import (
    PromotionSummary,
    failure_phrases,
    gate_passed,
    regimes_by_level,
)
from ffe_dagster.core.study.level_result import LevelResult

_KIND = {"long": "long-only", "short": "short-only", "both": "mixed"}


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
    levels = sorted(level_results, key=lambda r: r.level)
    regimes = regimes_by_level(promotes, promotion_summary)
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


def _levels_table(levels: Sequence[LevelResult]) -> str:
    header = (
        "| level | kind | trials | val Sharpe | val win rate | val max DD | val return "
        "| test Sharpe | test win rate | test max DD | test return | passed | progression |"
    )
    rows = [header, "|" + "---|" * 13]
    for r in levels:
        val = r.chosen.validation if r.chosen else {}
        decision = r.progression.decision.value if r.progression else "n/a"
        reasons = "; ".join(r.progression.reasons if r.progression else ())
        cells = [
            f"L{r.level} {r.name}".strip(),
            _KIND.get(r.direction, r.direction),
            _trials_cell(r),
            *_metric_cells(val),
            *_metric_cells(r.test),
            "skipped" if r.skipped else ("yes" if r.passed else "no"),
            f"{decision}: {reasons}" if reasons else decision,
        ]
        rows.append("| " + " | ".join(escape_cell(c) for c in cells) + " |")
    return "\n".join(rows)


def _trials_cell(r: LevelResult) -> str:
    tries = len(r.tries)
    return f"{r.n_trials}" + (f" ({tries} tries)" if tries > 1 else "")


def _metric_cells(metrics: Mapping[str, float]) -> list[str]:
    return [
        format_optional(metrics.get("sharpe"), ""),
        format_optional(metrics.get("win_rate_pct"), "%"),
        format_optional(metrics.get("max_drawdown_pct"), "%"),
        format_optional(metrics.get("total_return_pct"), "%"),
    ]


def _failures(levels: Sequence[LevelResult]) -> list[str]:
    lines = []
    for r in levels:
        phrases = failure_phrases(r)
        if phrases:
            lines.append(f"- Level {r.level} failed {join_phrases(phrases)}.")
        elif not r.skipped and r.chosen is None:
            lines.append(f"- Level {r.level} chose no parameter set.")
    return ["Failed criteria (test period):\n\n" + "\n".join(lines)] if lines else []


def _level_header(r: LevelResult, regimes: Mapping[int, Sequence[str]]) -> str:
    kind = _KIND.get(r.direction, r.direction)
    targets = regimes.get(r.level)
    return f"L{r.level} {kind}" + (f" → {', '.join(targets)}" if targets else "")


def _parameters_table(levels: Sequence[LevelResult], regimes: Mapping[int, Sequence[str]]) -> str:
    chosen = [r.chosen.params if r.chosen else {} for r in levels]
    names: list[str] = []
    for params in chosen:
        names += [k for k in params if k not in names]
    if not names:
        return "No level chose a parameter set."
    header = "| parameter | " + " | ".join(_level_header(r, regimes) for r in levels) + " |"
    rows = [header, "|" + "---|" * (len(levels) + 1)]
    for name in names:
        cells = [format_param(p.get(name)) for p in chosen]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _promotion_table(summary: PromotionSummary) -> str:
    rows = [
        "| regime | level | gate | passed | version | MLflow model version | reason |",
        "|---|---|---|---|---|---|---|",
    ]
    for regime, d in summary.items():
        passed = gate_passed(d)
        cells = [
            regime,
            str(d.get("level", "n/a")),
            str(d.get("stage") or Stage.COLD.value),
            "not judged" if passed is None else ("yes" if passed else "no"),
            str(d.get("version") or "n/a"),
            str(d.get("model_version") or "n/a"),
            str(d.get("reason", "")),
        ]
        rows.append("| " + " | ".join(escape_cell(c) for c in cells) + " |")
    return "\n".join(rows)


def _stability(levels: Sequence[LevelResult], max_shift: float) -> list[str]:
    shifted = [r for r in levels if r.parameter_shift]
    if not shifted:
        return ["No level had a previous level's choice to compare with."]
    names: list[str] = []
    for r in shifted:
        names += [k for k in r.parameter_shift if k not in names]
    header = "| parameter | " + " | ".join(f"L{r.level} vs previous" for r in shifted) + " |"
    rows = [header, "|" + "---|" * (len(shifted) + 1)]
    for name in names:
        cells = []
        for r in shifted:
            value = r.parameter_shift.get(name)
            text = "n/a" if value is None else f"{value:.0%}"
            cells.append(f"**{text}**" if value is not None and value > max_shift else text)
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    notes = []
    for r in shifted:
        shift = r.parameter_shift
        widest = max(shift, key=lambda k: shift[k])
        moved = f"{widest} moved {shift[widest]:.0%} of its search range"
        if shift[widest] > max_shift:
            notes.append(f"- Level {r.level}: parameters swing ({moved}, > {max_shift:.0%}).")
        else:
            notes.append(f"- Level {r.level}: stable (largest move: {moved}).")
    return [
        "Move of each parameter from the previous level's choice, as a share of its search range "
        f"(bold above {max_shift:.0%}):",
        "\n".join(rows),
        "\n".join(notes),
    ]


def _importance_table(levels: Sequence[LevelResult]) -> str:
    ranked = [r for r in levels if r.analysis.get("importance")]
    if not ranked:
        return ""
    names: list[str] = []
    for r in ranked:
        imp: Mapping[str, float] = r.analysis["importance"]
        names += [k for k in sorted(imp, key=lambda k: -imp[k]) if k not in names]
    header = "| parameter | " + " | ".join(f"L{r.level}" for r in ranked) + " |"
    rows = [header, "|" + "---|" * (len(ranked) + 1)]
    for name in names:
        cells = [format_optional(r.analysis["importance"].get(name), "") for r in ranked]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _robustness(levels: Sequence[LevelResult]) -> list[str]:
    out: list[str] = []
    for r in levels:
        analysis = r.analysis
        if not any(k in analysis for k in ("overfitting", "walk_forward", "cost_sensitivity")):
            continue
        out.append(f"### Level {r.level} {r.name}".rstrip())
        out.append(_robustness_table(analysis))
        if r.stress:
            out.append(_stress_table(r.stress))
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
            format_optional(m.get("total_return_pct"), "%"),
            format_optional(m.get("sharpe"), ""),
            format_optional(m.get("max_drawdown_pct"), "%"),
            format_optional(m.get("win_rate_pct"), "%"),
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
