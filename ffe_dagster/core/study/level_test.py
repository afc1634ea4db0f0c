"""A level's test side: the chosen set judged on bars that never steered a choice.

The test metrics, level 4's stress periods and cost sensitivity, and the pass criteria. All of it
reads the test era (or, without eras, each segment's tail) and the chosen parameters; the study
side (``levels.run_level``'s study, choice, look-ahead and vectorbt checks, deflated Sharpe, PBO,
walk-forward) hands in only the chosen set and its three robustness numbers. So a cycle whose new
bars lengthen only the test era computes this side again and keeps the other
(``levels.retest_level``), with the same functions a level run from scratch calls.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from ffe_dagster.core.backtest.reference import Segment
from ffe_dagster.core.backtest.strategies import get_strategy
from ffe_dagster.core.study.eras import LevelData, test_windows
from ffe_dagster.core.study.evaluation import LevelEvaluator, Params, Period
from ffe_dagster.core.study.level_robustness import cost_sensitivity
from ffe_dagster.core.study.level_specs import (
    CriterionResult,
    CurriculumSpec,
    LevelSpec,
    build_segments,
    evaluate_pass_criteria,
)

# The study side's numbers a level-4 test judges by (``test`` holds them beside the test metrics).
STUDY_SIDE_NUMBERS = ("deflated_sharpe", "pbo", "walk_forward_efficiency")
# The ``analysis`` entries the test side writes; the rest of ``analysis`` is the study side's.
TEST_SIDE_ANALYSIS = (
    "test_segments",
    "stress_out_of_sample",
    "stress_in_sample_excluded",
    "cost_sensitivity",
)

_UNMEASURED = {
    "stress_worst_total_return_pct": "no stress period falls in the test period, outside every "
    "training/validation bar of the warm-start chain",
}


@dataclass(frozen=True, slots=True)
class TestSide:
    """What a level's test side computes: test metrics (with level 4's robustness numbers),
    stress metrics by period, the pass criteria, and its entries of the level's analysis."""

    __test__ = False  # a result type, not a pytest class

    test: Mapping[str, float] = field(default_factory=dict[str, float])
    stress: Mapping[str, Mapping[str, float]] = field(
        default_factory=dict[str, Mapping[str, float]]
    )
    criteria: tuple[CriterionResult, ...] = ()
    analysis: Mapping[str, Any] = field(default_factory=dict[str, Any])


def level_test_evaluator(
    spec: LevelSpec, curriculum: CurriculumSpec, data: LevelData
) -> LevelEvaluator | None:
    """The level's test-era segments (``test_windows``) in an evaluator whose ``Period.TEST`` is
    every bar; None when the test era holds no segment of at least ``min_segment_bars``."""
    segments = build_segments(
        test_windows(spec, data, curriculum),
        data.bars,
        data.periods_per_year,
        holdout_start=data.holdout_start,
        min_bars=curriculum.min_segment_bars,
    )
    if not segments:
        return None
    return LevelEvaluator(
        segments,
        get_strategy(curriculum.strategy, signals=data.signals),
        spec.direction,
        curriculum.costs,
        0.0,
        0.0,
    )


def stress_metrics(
    evaluator: LevelEvaluator,
    params: Params,
    periods: Mapping[str, tuple[datetime, datetime]],
) -> dict[str, dict[str, float]]:
    """Metrics of ``params`` over each stress period's bars of ``evaluator``'s segments (a
    period with fewer than 24 bars in a segment is left out of it; one with none, entirely)."""
    out: dict[str, dict[str, float]] = {}
    for name, (start, end) in periods.items():
        pieces: list[Segment] = []
        for seg in evaluator.segments:
            lo = int((seg.ts < _naive(start)).sum())
            hi = int((seg.ts <= _naive(end)).sum())
            if hi - lo >= 24:
                pieces.append(seg.slice(lo, hi))
        if pieces:
            sub = LevelEvaluator(
                pieces,
                evaluator.strategy,
                evaluator.direction,
                evaluator.costs,
                evaluator.train_fraction,
                evaluator.validation_fraction,
            )
            out[name] = sub.evaluate(params, Period.ALL).as_dict()
    return out


def _naive(moment: datetime) -> np.datetime64:
    # Segment timestamps are numpy datetime64 in UTC without a zone.
    return np.datetime64(moment.replace(tzinfo=None), "us")


def judge_on_test(
    spec: LevelSpec,
    curriculum: CurriculumSpec,
    tester: LevelEvaluator | None,
    chosen: Params | None,
    *,
    study_numbers: Mapping[str, float],
    test_segments: tuple[Segment, ...],
) -> TestSide:
    """The test side of a level whose study side chose ``chosen`` (None: nothing to judge).

    ``tester`` evaluates the test period (``Period.TEST``; the test era's evaluator, or without
    eras the level's own); ``study_numbers`` are level 4's ``STUDY_SIDE_NUMBERS`` from the study
    side, judged with the test metrics; ``test_segments`` are the test era's segments the
    analysis lists (empty without eras). Stress periods count only inside the test period.
    """
    analysis: dict[str, Any] = {
        "test_segments": [
            [s.instrument, str(s.ts[0]), str(s.ts[-1]), len(s)] for s in test_segments
        ]
    }
    if chosen is None:
        return TestSide(analysis=analysis)
    test: dict[str, float] = {}
    if tester is not None:
        test = tester.evaluate(chosen, Period.TEST).as_dict()
    stress: dict[str, dict[str, float]] = {}
    if spec.robustness:
        stress = stress_metrics(tester, chosen, curriculum.stress_periods) if tester else {}
        if stress:
            test["stress_worst_total_return_pct"] = min(
                m["total_return_pct"] for m in stress.values()
            )
        test.update({k: study_numbers[k] for k in STUDY_SIDE_NUMBERS})
        # Stress windows inside the training/validation era are in sample: not counted.
        analysis["stress_out_of_sample"] = sorted(stress)
        analysis["stress_in_sample_excluded"] = sorted(set(curriculum.stress_periods) - set(stress))
        if tester is not None:
            analysis["cost_sensitivity"] = cost_sensitivity(tester, chosen, curriculum.robustness)
    criteria = evaluate_pass_criteria(spec.pass_criteria, test, _UNMEASURED)
    return TestSide(test=test, stress=stress, criteria=tuple(criteria), analysis=analysis)
