"""The curriculum report and the deployment recommendation, on hand-made level results."""

import copy
from typing import Any

from ffe_dagster.core.reporting.curriculum_report import curriculum_report
from ffe_dagster.core.reporting.recommendation import deployment_recommendation, regime_verdicts
from ffe_dagster.core.study.level_result import LevelResult
from tests.level_rows import level_row

PROMOTES = {1: ["BULL"], 2: ["BEAR"], 3: [], 4: ["SIDEWAYS", "DEFAULT"]}


def crit(name: str, threshold: float, value: float, passed: bool) -> dict[str, Any]:
    return {"name": name, "threshold": threshold, "value": value, "passed": passed}


def metrics(sharpe: float, win: float, dd: float, ret: float, trades: int = 40) -> dict[str, float]:
    return {
        "sharpe": sharpe,
        "win_rate_pct": win,
        "max_drawdown_pct": dd,
        "total_return_pct": ret,
        "n_trades": float(trades),
    }


def level(
    n: int,
    direction: str,
    *,
    passed: bool,
    params: dict[str, Any],
    validation: dict[str, float],
    test: dict[str, float],
    criteria: list[dict[str, Any]],
    shift: dict[str, float] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "level": n,
        "name": f"Level {n}",
        "direction": direction,
        "passed": passed,
        "n_trials": 100,
        "chosen": {"number": 1, "params": params, "validation": validation},
        "test": test,
        "criteria": criteria,
        "parameter_shift": shift or {},
        "progression": {"decision": "advance", "reasons": ["stable"]},
        "tries": [{"try": 1}],
        "analysis": {},
        **extra,
    }


def cost_grid() -> list[dict[str, float]]:
    return [
        {
            "fee_pct": fee,
            "slippage_pct": slip,
            "sharpe": 1.5 - 2 * fee - 3 * slip,
            "total_return_pct": 5.0 - 20 * fee - 30 * slip,
            "win_rate_pct": 55.0,
        }
        for fee in (0.0, 0.1, 0.2)
        for slip in (0.0, 0.1)
    ]


def levels() -> list[LevelResult]:
    """``level_rows`` as the stored records the reports read."""
    return [level_row(r) for r in level_rows()]


def level_rows() -> list[dict[str, Any]]:
    """L1 fails its win rate on test; L2 and L3 pass; L4 passes with robustness results."""
    return [
        level(
            1,
            "long",
            passed=False,
            params={"stop_loss_pct": 2.0, "take_profit_pct": 4.25, "fast_window": 12},
            validation=metrics(1.1, 52.0, 7.5, 6.2),
            test=metrics(0.91, 45.5, 9.0, 3.1),
            criteria=[
                crit("min_win_rate_pct", 50, 45.5, False),
                crit("min_sharpe", 0.8, 0.91, True),
            ],
            analysis={"importance": {"fast_window": 0.6, "stop_loss_pct": 0.4}},
        ),
        level(
            2,
            "short",
            passed=True,
            params={"stop_loss_pct": 2.9, "take_profit_pct": 4.25, "fast_window": 12},
            validation=metrics(1.3, 55.0, 6.0, 4.0),
            test=metrics(1.2, 56.0, 5.0, 2.5),
            criteria=[crit("min_win_rate_pct", 50, 56.0, True), crit("min_sharpe", 0.8, 1.2, True)],
            shift={"stop_loss_pct": 0.2, "take_profit_pct": 0.0},
        ),
        level(
            3,
            "both",
            passed=True,
            params={"stop_loss_pct": 2.9, "take_profit_pct": 9.0, "fast_window": 12},
            validation=metrics(1.2, 53.0, 8.0, 5.0),
            test=metrics(1.1, 54.0, 8.5, 4.4),
            criteria=[crit("min_win_rate_pct", 52, 54.0, True)],
            shift={"stop_loss_pct": 0.0, "take_profit_pct": 0.75},
            tries=[{"try": 1}, {"try": 2}],
        ),
        level(
            4,
            "both",
            passed=True,
            params={"stop_loss_pct": 3.1, "take_profit_pct": 8.0, "fast_window": 14},
            validation=metrics(1.5, 56.0, 6.5, 7.0),
            test=metrics(1.4, 55.0, 6.0, 12.0),
            criteria=[
                crit("min_win_rate_pct", 53, 55.0, True),
                crit("min_deflated_sharpe", 0.95, 0.97, True),
                crit("max_pbo", 0.5, 0.2, True),
            ],
            shift={"stop_loss_pct": 0.0444, "take_profit_pct": 0.105},
            stress={"covid_crash_2020": metrics(0.5, 50.0, 4.0, -2.0, 12)},
            analysis={
                "overfitting": {
                    "deflated_sharpe": 0.97,
                    "train_sharpe": 1.8,
                    "expected_max_sharpe": 1.1,
                    "dsr_trials": 200,
                    "pbo": 0.2,
                    "pbo_trials": 64,
                    "pbo_combinations": 12870,
                },
                "walk_forward": {
                    "walk_forward_efficiency": 0.4,
                    "stitched_oos_sharpe": 0.7,
                    "stitched_oos_return_pct": 3.0,
                    "windows": [{}, {}, {}, {}],
                },
                "cost_sensitivity": cost_grid(),
            },
        ),
    ]


PROMOTION = {
    "BULL": {
        "promoted": True,
        "version": 2,
        "level": 1,
        "reason": "COLD passed on the last 7 days",
    },
    "BEAR": {
        "promoted": False,
        "version": 4,
        "level": 2,
        "reason": "no candidate of level 2 passed: COLD failed on the last 30 days",
    },
    "SIDEWAYS": {
        "promoted": True,
        "version": 3,
        "level": 4,
        "reason": "COLD passed on the last 14 days",
        "model_version": 7,
    },
    "DEFAULT": {
        "promoted": True,
        "version": 1,
        "level": 4,
        "reason": "COLD passed on the last 14 days",
    },
}


def lines(text: str) -> list[str]:
    return text.splitlines()


def test_levels_table_compares_long_short_and_mixed() -> None:
    report = curriculum_report(levels(), PROMOTION)
    assert (
        "| L1 Level 1 | long-only | 100 | 1.10 | 52.0% | 7.5% | 6.2% | 0.91 | 45.5% | 9.0% | 3.1% "
        "| no | advance: stable |"
    ) in lines(report)
    assert (
        "| L2 Level 2 | short-only | 100 | 1.30 | 55.0% | 6.0% | 4.0% | 1.20 | 56.0% | 5.0% | 2.5% "
        "| yes | advance: stable |"
    ) in lines(report)
    assert (
        "| L3 Level 3 | mixed | 100 (2 tries) | 1.20 | 53.0% | 8.0% | 5.0% | 1.10 | 54.0% | 8.5% "
        "| 4.4% | yes | advance: stable |"
    ) in lines(report)
    assert "- Level 1 failed its win-rate criterion (45.5% < 50%)." in lines(report)


def test_chosen_parameters_per_level_and_regime() -> None:
    report = curriculum_report(levels(), promotes=PROMOTES)
    assert (
        "| parameter | L1 long-only → BULL | L2 short-only → BEAR | L3 mixed "
        "| L4 mixed → SIDEWAYS, DEFAULT |"
    ) in lines(report)
    assert "| stop_loss_pct | 2 | 2.9 | 2.9 | 3.1 |" in lines(report)
    assert "| take_profit_pct | 4.25 | 4.25 | 9 | 8 |" in lines(report)
    assert "## Promotion" not in report  # no promotion summary given


def test_regimes_come_from_the_promotion_summary_when_not_given() -> None:
    report = curriculum_report(levels(), PROMOTION)
    assert "| parameter | L1 long-only → BULL | L2 short-only → BEAR | L3 mixed " in report
    assert "| SIDEWAYS | 4 | COLD | yes | 3 | 7 | COLD passed on the last 14 days |" in (
        lines(report)
    )


def test_stability_flags_a_parameter_swing() -> None:
    report = curriculum_report(levels(), PROMOTION)
    assert "| take_profit_pct | 0% | **75%** | 10% |" in lines(report)
    assert (
        "- Level 3: parameters swing (take_profit_pct moved 75% of its search range, > 50%)."
        in lines(report)
    )
    assert (
        "- Level 2: stable (largest move: stop_loss_pct moved 20% of its search range)."
        in lines(report)
    )


def test_level_4_robustness_section() -> None:
    report = curriculum_report(levels(), PROMOTION)
    assert "### Level 4 Level 4" in lines(report)
    assert (
        "| deflated Sharpe ratio | 0.970 (train Sharpe 1.80 against an expected best of 1.10 "
        "over 200 trials) |"
    ) in lines(report)
    assert (
        "| probability of backtest over-fitting | 0.200 (64 trials, 12870 CSCV combinations) |"
        in lines(report)
    )
    assert "| walk-forward efficiency | 0.40 |" in lines(report)
    assert "| covid_crash_2020 | -2.0% | 0.50 | 4.0% | 50.0% | 12 |" in lines(report)
    assert (
        "Cost sensitivity (test period): Sharpe from 0.80 (fee 0.2%, slippage 0.1%) to 1.50 "
        "(fee 0%, slippage 0%); the return is positive in 4 of 6 scenarios."
    ) in lines(report)
    assert "| 0.2% | 1.10 / 1.00% | 0.80 / -2.00% |" in lines(report)
    assert "| fast_window | 0.60 |" in lines(report)  # importance of level 1


def test_report_without_robustness_or_previous_levels() -> None:
    only = levels()[:1]
    report = curriculum_report(only)
    assert "No level ran the robustness tests." in lines(report)
    assert "No level had a previous level's choice to compare with." in lines(report)


def test_recommendation_sentences_per_regime() -> None:
    text = deployment_recommendation(levels(), PROMOTION)
    assert lines(text)[0] == "Deploy: SIDEWAYS v3, DEFAULT v1. Do not deploy: BULL, BEAR."
    assert (
        "- Do not deploy BULL v2: level 1 failed its win-rate criterion (45.5% < 50%). It passed "
        "the COLD gate (COLD passed on the last 7 days), which alone is not enough: keep it in "
        "paper trading until level 1 passes."
    ) in lines(text)
    assert (
        "- Do not deploy new BEAR parameters: level 2 passed all 2 test criteria (win rate 56.0%, "
        "Sharpe 1.20, max drawdown 5.0%, return 2.5%), but the COLD gate (no candidate of level 2 "
        "passed: COLD failed on the last 30 days) rejected every candidate. Keep the current "
        "version."
    ) in lines(text)
    assert (
        "- Deploy SIDEWAYS v3: level 4 passed all 3 test criteria (win rate 55.0%, Sharpe 1.40, "
        "max drawdown 6.0%, return 12.0%), and the candidate passed the COLD gate (COLD passed "
        "on the last 14 days). Caution: walk-forward efficiency is 0.40 (< 0.5): out of sample "
        "the optimization kept 40% of its in-sample Sharpe. Caution: the test return turns "
        "negative in 1 of 6 cost scenarios (worst -2.00% at fee 0.2% and slippage 0.1% per side)."
    ) in lines(text)


def test_recommendation_without_promotion_decisions() -> None:
    text = deployment_recommendation(levels(), promotes=PROMOTES)
    assert lines(text)[0] == (
        "Candidates for deployment: BEAR, SIDEWAYS, DEFAULT. Do not deploy: BULL."
    )
    assert (
        "- Do not deploy BULL parameters: level 1 failed its win-rate criterion (45.5% < 50%)."
        in (lines(text))
    )
    assert any(
        line.startswith("- BEAR: level 2 passed all 2 test criteria") for line in lines(text)
    )


def test_failed_level_and_gate_together_and_nothing_to_deploy() -> None:
    rows = level_rows()[:1]
    rows[0]["criteria"].append(crit("max_drawdown_pct", 15, 18.25, False))
    results = [level_row(r) for r in rows]
    summary = {"BULL": {"promoted": False, "version": 5, "level": 1, "reason": "COLD failed"}}
    text = deployment_recommendation(results, summary)
    assert lines(text) == [
        "Deploy nothing this cycle: no regime's parameters passed both their level's criteria "
        "and the COLD gate.",
        "",
        "- Do not deploy BULL parameters: level 1 failed its win-rate criterion (45.5% < 50%) "
        "and its max-drawdown criterion (18.2% > 15%); the COLD gate (COLD failed) rejected it "
        "too.",
    ]


def test_skipped_and_missing_levels_are_not_deployed() -> None:
    skipped = level_row(
        {
            "level": 4,
            "name": "Level 4",
            "direction": "both",
            "passed": False,
            "skipped": True,
            "n_trials": 0,
            "chosen": None,
            "test": {},
            "criteria": [],
            "progression": {
                "decision": "advance",
                "reasons": ["skipped: level 3 met the skip rule"],
            },
        }
    )
    verdicts = regime_verdicts([skipped], promotes={2: ["BEAR"], 4: ["SIDEWAYS"]})
    assert [(v.regime, v.deploy) for v in verdicts] == [("BEAR", False), ("SIDEWAYS", False)]
    assert verdicts[0].sentence == "Do not deploy BEAR parameters: level 2 has no result."
    assert verdicts[1].sentence == (
        "Do not deploy SIDEWAYS parameters: level 4 was not run (skipped: level 3 met the skip "
        "rule), so its criteria were never tested."
    )
    assert "| L4 Level 4 | mixed | 0 | n/a |" in curriculum_report([skipped])


def test_no_regime_mapping_gives_no_recommendation() -> None:
    assert deployment_recommendation(levels()).startswith("No recommendation:")


def test_inputs_are_not_altered() -> None:
    results = levels()
    before = copy.deepcopy(results)
    curriculum_report(results, PROMOTION)
    deployment_recommendation(results, PROMOTION)
    assert results == before


def test_nothing_to_deploy_without_promotion_decisions() -> None:
    text = deployment_recommendation(levels()[:1], promotes={1: ["BULL"]})
    assert lines(text)[0] == (
        "Deploy nothing this cycle: no regime's parameters passed their level's criteria."
    )


def test_decision_words_of_the_staged_promotion() -> None:
    summary = {
        "BEAR": {
            "level": 2,
            "version": None,
            "stage": "COLD",
            "decision": "skip",
            "reason": "v2 at WARM in flight; new candidates wait",
        },
        "SIDEWAYS": {
            "level": 4,
            "version": 5,
            "stage": "COLD",
            "decision": "advance",
            "reason": "COLD passed on the last 7 days",
        },
    }
    text = deployment_recommendation(levels(), summary)
    assert lines(text)[0] == "Deploy: SIDEWAYS v5. Do not deploy: BEAR."
    assert (
        "- Do not deploy new BEAR parameters: none was judged this cycle (v2 at WARM in flight; "
        "new candidates wait)."
    ) in lines(text)
    report = curriculum_report(levels(), summary)
    assert (
        "| BEAR | 2 | COLD | not judged | n/a | n/a | v2 at WARM in flight; new candidates wait |"
        in lines(report)
    )
