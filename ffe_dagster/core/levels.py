"""Run one curriculum level end to end: data windows, study, selection, test, pass criteria.

This is the whole computation behind a level asset; the asset only loads data, passes storage in,
and publishes the returned ``LevelOutcome``.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from ffe_dagster.core.backtest import Segment
from ffe_dagster.core.curriculum import (
    CriterionResult,
    CurriculumSpec,
    LevelSpec,
    Window,
    build_segments,
    evaluate_pass_criteria,
)
from ffe_dagster.core.evaluation import LevelEvaluator, Params, Period
from ffe_dagster.core.optimize import (
    Candidate,
    StudyConfig,
    StudyOutcome,
    TrialRecord,
    rank_on_validation,
    run_study,
)
from ffe_dagster.core.regimes import Regime, regime_segments
from ffe_dagster.core.strategies import get_strategy

MAX_CANDIDATES = 5


@dataclass(frozen=True, slots=True)
class LevelData:
    """What a level reads: bars and regimes per instrument, and each instrument's hold-out."""

    bars: Mapping[str, pl.DataFrame]
    regimes: Mapping[str, pl.DataFrame]
    periods_per_year: Mapping[str, float]
    holdout_start: Mapping[str, datetime]


@dataclass(frozen=True, slots=True)
class LevelOutcome:
    """Everything a level produced, ready to publish and to feed the next level."""

    level: int
    name: str
    direction: str
    segments: tuple[tuple[str, str, str, int], ...]  # instrument, first ts, last ts, bars
    study: StudyOutcome
    candidates: tuple[Candidate, ...]
    chosen: Candidate | None
    test: Mapping[str, float]
    stress: Mapping[str, Mapping[str, float]]
    criteria: tuple[CriterionResult, ...]
    parameter_shift: Mapping[str, float]

    @property
    def passed(self) -> bool:
        """True when a parameter set was chosen and meets every pass criterion."""
        return self.chosen is not None and all(c.passed for c in self.criteria)


def level_windows(spec: LevelSpec, data: LevelData) -> list[Window]:
    """The level's fixed windows plus the regime segments the detector found."""
    windows = list(spec.windows)
    if spec.regime_segments is not None:
        regime = Regime(spec.regime_segments)
        for instrument, frame in data.regimes.items():
            for start, end in regime_segments(frame, regime, min_days=spec.regime_min_days):
                windows.append(Window(instrument, start, end))
    return windows


def parameter_shift(previous: Params | None, current: Params | None) -> dict[str, float]:
    """Relative change of each numeric parameter from the previous level's choice."""
    if not previous or not current:
        return {}
    shift: dict[str, float] = {}
    for name, value in current.items():
        before = previous.get(name)
        if isinstance(value, str) or before is None or isinstance(before, str):
            continue
        shift[name] = abs(float(value) - float(before)) / max(abs(float(before)), 1e-12)
    return shift


def _stress_metrics(
    evaluator: LevelEvaluator,
    params: Params,
    periods: Mapping[str, tuple[datetime, datetime]],
) -> dict[str, dict[str, float]]:
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
                pieces, evaluator.strategy, evaluator.direction, evaluator.costs, 0.6, 0.2
            )
            out[name] = sub.evaluate(params, Period.ALL).as_dict()
    return out


def _naive(moment: datetime) -> np.datetime64:
    # Segment timestamps are numpy datetime64 in UTC without a zone.
    return np.datetime64(moment.replace(tzinfo=None), "us")


def run_level(
    spec: LevelSpec,
    curriculum: CurriculumSpec,
    data: LevelData,
    *,
    study: StudyConfig,
    warm_start: Params | None,
    on_trial: Callable[[TrialRecord, int], None] | None = None,
) -> LevelOutcome:
    """Optimize on train, choose on validation, report test (never used to choose)."""
    segments = build_segments(
        level_windows(spec, data),
        data.bars,
        data.periods_per_year,
        holdout_start=data.holdout_start,
        min_bars=curriculum.min_segment_bars,
    )
    evaluator = LevelEvaluator(
        segments,
        get_strategy(curriculum.strategy),
        spec.direction,
        curriculum.costs,
        curriculum.train_fraction,
        curriculum.validation_fraction,
    )
    outcome = run_study(
        lambda batch: evaluator.evaluate_many(batch, Period.TRAIN),
        curriculum.parameters,
        study,
        warm_start=warm_start,
        on_trial=on_trial,
    )
    share = curriculum.validation_fraction / curriculum.train_fraction
    candidates = rank_on_validation(
        outcome,
        lambda batch: evaluator.evaluate_many(batch, Period.VALIDATION),
        curriculum.constraints,
        min_validation_trades=max(5, int(curriculum.constraints.min_trades * share)),
    )[:MAX_CANDIDATES]
    chosen = candidates[0] if candidates else None
    test: dict[str, float] = {}
    stress: dict[str, dict[str, float]] = {}
    criteria: list[CriterionResult] = []
    if chosen is not None:
        test = evaluator.evaluate(chosen.params, Period.TEST).as_dict()
        if "stress_min_total_return_pct" in spec.pass_criteria:
            stress = _stress_metrics(evaluator, chosen.params, curriculum.stress_periods)
            test["stress_worst_total_return_pct"] = min(
                (m["total_return_pct"] for m in stress.values()), default=0.0
            )
        criteria = evaluate_pass_criteria(spec.pass_criteria, test)
    return LevelOutcome(
        level=spec.level,
        name=spec.name,
        direction=spec.direction.value,
        segments=tuple((s.instrument, str(s.ts[0]), str(s.ts[-1]), len(s)) for s in segments),
        study=outcome,
        candidates=tuple(candidates),
        chosen=chosen,
        test=test,
        stress=stress,
        criteria=tuple(criteria),
        parameter_shift=parameter_shift(warm_start, chosen.params if chosen else None),
    )


def holdout_starts(bars: Mapping[str, pl.DataFrame], holdout_days: int) -> dict[str, datetime]:
    """Per instrument, the first instant of the hold-out: last bar minus ``holdout_days``."""
    out: dict[str, datetime] = {}
    for instrument, frame in bars.items():
        last = frame["ts"].max()
        if isinstance(last, datetime):
            out[instrument] = last - timedelta(days=holdout_days)
    return out


def outcome_to_dict(outcome: LevelOutcome) -> dict[str, Any]:
    """A JSON-ready view of a level's outcome (stored, logged to MLflow, read by promotion)."""

    def candidate(c: Candidate | None) -> dict[str, Any] | None:
        if c is None:
            return None
        return {
            "number": c.number,
            "params": dict(c.params),
            "train": dict(c.train),
            "validation": dict(c.validation),
            "validation_feasible": c.validation_feasible,
        }

    return {
        "level": outcome.level,
        "name": outcome.name,
        "direction": outcome.direction,
        "passed": outcome.passed,
        "study_name": outcome.study.study_name,
        "n_trials": len(outcome.study.trials),
        "new_trials": outcome.study.new_trials,
        "feasible_trials": sum(t.feasible for t in outcome.study.trials),
        "pareto_size": len(outcome.study.pareto_numbers),
        "segments": [list(s) for s in outcome.segments],
        "chosen": candidate(outcome.chosen),
        "candidates": [candidate(c) for c in outcome.candidates],
        "test": dict(outcome.test),
        "stress": {k: dict(v) for k, v in outcome.stress.items()},
        "criteria": [
            {"name": c.name, "threshold": c.threshold, "value": c.value, "passed": c.passed}
            for c in outcome.criteria
        ],
        "parameter_shift": dict(outcome.parameter_shift),
    }


def trials_table(outcome: StudyOutcome) -> pl.DataFrame:
    """One row per finished trial: number, parameters, train metrics, feasibility, Pareto flag."""
    pareto = set(outcome.pareto_numbers)
    rows = [
        {
            "number": t.number,
            **{f"param_{k}": v for k, v in t.params.items()},
            **{f"train_{k}": v for k, v in t.metrics.items()},
            "feasible": t.feasible,
            "pareto": t.number in pareto,
        }
        for t in outcome.trials
    ]
    return pl.DataFrame(rows) if rows else pl.DataFrame({"number": []})
