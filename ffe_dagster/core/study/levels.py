"""Run one curriculum level end to end: data windows, study, selection, test, pass criteria.

This is the whole computation behind a level asset; the asset only loads data, passes storage in,
and publishes the returned ``LevelOutcome``.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
from optuna.storages import BaseStorage

from ffe_dagster.core.backtest.metrics import Metrics
from ffe_dagster.core.backtest.reference import Segment
from ffe_dagster.core.backtest.strategies import EntryStrategy, FileSignals, get_strategy
from ffe_dagster.core.study.eras import LevelData, level_windows, test_windows
from ffe_dagster.core.study.evaluation import FullAnalysis, LevelEvaluator, Params, Period
from ffe_dagster.core.study.level_result import LevelResult, LevelTry
from ffe_dagster.core.study.level_robustness import (
    StudyContext,
    cost_sensitivity,
    importance_report,
    overfitting_report,
    stability,
    walk_forward,
)
from ffe_dagster.core.study.level_specs import (
    CriterionResult,
    CurriculumSpec,
    LevelSpec,
    ParamRange,
    build_segments,
    evaluate_pass_criteria,
)
from ffe_dagster.core.study.lookahead import lookahead_analysis
from ffe_dagster.core.study.optimize import (
    BatchObjective,
    StudyConfig,
    StudyOutcome,
    TrialRecord,
    run_study,
)
from ffe_dagster.core.study.progression import Decision, Progression, decide, next_trial_count
from ffe_dagster.core.study.selection import (
    Candidate,
    plateau_neighbourhood,
    rank_by_plateau,
    rank_on_validation,
)

MAX_CANDIDATES = 5
VECTORBT_TOLERANCE = 1e-9


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
    progression: Progression
    tries: tuple[LevelTry, ...]
    analysis: Mapping[str, Any]
    chosen_trades: pl.DataFrame | None = None  # vectorbt's trades of the chosen set, all periods
    chosen_equity: pl.DataFrame | None = None  # and its equity curve with drawdown
    chain_trials: int = 0  # trials of the warm-start chain up to and including this level

    @property
    def passed(self) -> bool:
        """True when a parameter set was chosen and meets every pass criterion."""
        return self.chosen is not None and all(c.passed for c in self.criteria)


def parameter_shift(
    previous: Params | None, current: Params | None, space: Sequence[ParamRange] = ()
) -> dict[str, float]:
    """How far each numeric parameter moved from the previous level's choice.

    As a fraction of the parameter's search range when ``space`` gives one (0.5 = half the range),
    so a move from 1 % to 2 % of a 1-3 % range reads 0.5 rather than 100 %; relative to the
    previous value otherwise.
    """
    if not previous or not current:
        return {}
    widths = {p.name: p.high - p.low for p in space if not p.choices and p.high > p.low}
    shift: dict[str, float] = {}
    for name, value in current.items():
        before = previous.get(name)
        if isinstance(value, str) or before is None or isinstance(before, str):
            continue
        scale = widths.get(name) or max(abs(float(before)), 1e-12)
        shift[name] = abs(float(value) - float(before)) / scale
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


def entry_strategy(curriculum: CurriculumSpec, signals: FileSignals | None = None) -> EntryStrategy:
    """The curriculum's entry strategy: a built-in one, or ``signals``, its file's signals
    (``ffe_dagster.sources.files.curriculum_signals``), for ``file_signals``."""
    return get_strategy(curriculum.strategy, signals=signals)


def choose_candidates(
    validate: BatchObjective, outcome: StudyOutcome, curriculum: CurriculumSpec
) -> list[Candidate]:
    """The study's Pareto candidates in the order the curriculum's selection rule prefers them
    (at most ``MAX_CANDIDATES``), judged only by ``validate``: ``run_level`` passes the
    level's validation-period objective, so the test era and the hold-out play no part.

    ``best``: feasible on validation first, then validation Sharpe (``rank_on_validation``).
    ``plateau``: the same candidates re-ordered by the mean validation Sharpe of each one and
    its neighbourhood (``rank_by_plateau``), so a lone spike whose neighbours collapse falls
    behind a broad plateau.
    """
    share = curriculum.validation_fraction / curriculum.train_fraction
    ranked = rank_on_validation(
        outcome,
        validate,
        curriculum.constraints,
        min_validation_trades=max(5, int(curriculum.constraints.min_trades * share)),
    )
    if curriculum.selection == "plateau":
        # Every candidate's neighbours are scored in one batched call of ``validate``.
        scores = rank_by_plateau(
            ranked, validate, curriculum.parameters, fraction=curriculum.plateau_fraction
        )
        ranked = [s.candidate for s in scores]
    elif curriculum.selection != "best":
        raise ValueError(f"unknown selection rule {curriculum.selection!r}")
    return ranked[:MAX_CANDIDATES]


def _validation(evaluator: LevelEvaluator) -> BatchObjective:
    def validate(batch: Sequence[Params]) -> Sequence[Metrics]:
        return evaluator.evaluate_many(batch, Period.VALIDATION)

    return validate


def level_study_config(
    curriculum: CurriculumSpec,
    study_name: str,
    storage: BaseStorage,
    n_trials: int,
    *,
    fail_stale_running: bool = True,
) -> StudyConfig:
    """The study of a level as the curriculum configures it: its seed, constraints and optimizer
    (sampler, batch size, patience, time limit). Every process working on a level's study (the
    level asset, each study worker) builds it here so they all search the same way."""
    opt = curriculum.optimizer
    return StudyConfig(
        study_name=study_name,
        storage=storage,
        n_trials=n_trials,
        seed=curriculum.seed,
        constraints=curriculum.constraints,
        timeout_s=opt.timeout_s,
        batch_size=opt.batch_size,
        patience=opt.patience,
        sampler=opt.sampler,
        fail_stale_running=fail_stale_running,
    )


def level_segments(spec: LevelSpec, curriculum: CurriculumSpec, data: LevelData) -> list[Segment]:
    """The bars the level's trials score on: its windows plus regime runs, cut at the test era
    and the hold-out, as segments (what ``level_evaluator`` evaluates, and what a study's
    identity hashes)."""
    return build_segments(
        level_windows(spec, data, curriculum),
        data.bars,
        data.periods_per_year,
        holdout_start=data.holdout_start,
        min_bars=curriculum.min_segment_bars,
    )


def level_evaluator(spec: LevelSpec, curriculum: CurriculumSpec, data: LevelData) -> LevelEvaluator:
    """The level's train/validation segments (windows plus regime runs, cut at the test era
    and the hold-out) in an evaluator: the one train objective of the level's study. Each
    segment is split in time order train : validation = ``split.train`` : ``split.validation``.

    ``run_level`` and the study workers (``ffe_dagster.jobs.study_workers``) both build it here,
    so every process adding trials to a study scores them on exactly the same bars.
    """
    segments = level_segments(spec, curriculum, data)
    train = curriculum.train_fraction
    if curriculum.test_era_start:
        # The test period is the test era (``level_test_evaluator``), not a tail of each
        # segment: train and validation share the whole segment.
        train = curriculum.train_fraction / (
            curriculum.train_fraction + curriculum.validation_fraction
        )
    return LevelEvaluator(
        segments,
        entry_strategy(curriculum, data.signals),
        spec.direction,
        curriculum.costs,
        train,
        1.0 - train if curriculum.test_era_start else curriculum.validation_fraction,
    )


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
        entry_strategy(curriculum, data.signals),
        spec.direction,
        curriculum.costs,
        0.0,
        0.0,
    )


def _test_side(
    spec: LevelSpec, curriculum: CurriculumSpec, data: LevelData, evaluator: LevelEvaluator
) -> LevelEvaluator | None:
    # With eras the test period is the test era; without (hand-built specs), each segment's tail.
    if curriculum.test_era_start:
        return level_test_evaluator(spec, curriculum, data)
    return evaluator


def _robustness(
    spec: LevelSpec,
    curriculum: CurriculumSpec,
    evaluator: LevelEvaluator,
    tester: LevelEvaluator | None,
    outcome: StudyOutcome,
    chosen: Params,
    context: StudyContext,
    trials_tried: int,
) -> tuple[dict[str, float], dict[str, dict[str, float]], dict[str, Any]]:
    """Level-4 robustness: stress on the test period only, DSR and PBO, walk-forward, costs."""
    test: dict[str, float] = {}
    stress = _stress_metrics(tester, chosen, curriculum.stress_periods) if tester else {}
    if stress:
        test["stress_worst_total_return_pct"] = min(m["total_return_pct"] for m in stress.values())
    overfit = overfitting_report(
        evaluator, outcome, chosen, curriculum.robustness, trials_tried=trials_tried
    )
    wf = walk_forward(evaluator, curriculum.robustness, context)
    test["deflated_sharpe"] = overfit["deflated_sharpe"]
    test["pbo"] = overfit.get("pbo", 1.0)
    test["walk_forward_efficiency"] = wf["walk_forward_efficiency"]
    analysis: dict[str, Any] = {
        "overfitting": overfit,
        "walk_forward": wf,
        # Stress windows inside the training/validation era are in sample: not counted.
        "stress_out_of_sample": sorted(stress),
        "stress_in_sample_excluded": sorted(set(curriculum.stress_periods) - set(stress)),
    }
    if tester is not None:
        analysis["cost_sensitivity"] = cost_sensitivity(tester, chosen, curriculum.robustness)
    return test, stress, analysis


_UNMEASURED = {
    "stress_worst_total_return_pct": "no stress period falls in the test period, outside every "
    "training/validation bar of the warm-start chain",
}


def run_level(
    spec: LevelSpec,
    curriculum: CurriculumSpec,
    data: LevelData,
    *,
    study: StudyConfig,
    warm_start: Params | None,
    on_trial: Callable[[TrialRecord, int], None] | None = None,
    walk_forward_trials: int = 8,
    max_tries: int | None = None,
    chain_trials: int = 0,
) -> LevelOutcome:
    """Optimize on train, choose on validation, report test (never used to choose).

    A level whose choice calls for a repeat (docs/spec.md §4) runs again on the same study with
    ``repeat_trial_factor`` times the trials, at most ``max_tries`` times in all (the
    curriculum's value unless overridden here). ``chain_trials`` is how many trials the
    warm-start chain before this level ran (they fed its starting point): the deflated Sharpe
    counts them with the level's own trials and the candidates the COLD pick chooses among.
    """
    tries_allowed = max_tries or curriculum.progression.max_tries
    evaluator = level_evaluator(spec, curriculum, data)
    segments = evaluator.segments
    tester = _test_side(spec, curriculum, data, evaluator)
    tries: list[LevelTry] = []
    config = study
    while True:
        outcome = run_study(
            lambda batch: evaluator.evaluate_many(batch, Period.TRAIN),
            curriculum.parameters,
            config,
            warm_start=warm_start,
            on_trial=on_trial,
        )
        candidates = choose_candidates(_validation(evaluator), outcome, curriculum)
        chosen = candidates[0] if candidates else None
        shift = parameter_shift(
            warm_start, chosen.params if chosen else None, curriculum.parameters
        )
        progression = decide(curriculum.progression, chosen.validation if chosen else None, shift)
        tries.append(
            LevelTry(
                number=len(tries) + 1,
                n_trials=config.n_trials,
                completed_trials=len(outcome.trials),
                stop_reason=outcome.stop_reason,
                seconds=round(outcome.seconds, 3),
                decision=progression.decision.value,
                reasons=progression.reasons,
            )
        )
        if progression.decision is not Decision.REPEAT or len(tries) >= tries_allowed:
            break
        config = replace(config, n_trials=next_trial_count(curriculum.progression, config.n_trials))
    test: dict[str, float] = {}
    stress: dict[str, dict[str, float]] = {}
    criteria: list[CriterionResult] = []
    # Every trial that fed the choice: the chain's, this study's (all tries share it) and the
    # candidates COLD may still pick among.
    trials_tried = chain_trials + len(outcome.trials) + len(candidates)
    analysis: dict[str, Any] = {
        "stability": stability(shift),
        "trials_tried": trials_tried,
        "test_segments": [
            [s.instrument, str(s.ts[0]), str(s.ts[-1]), len(s)]
            for s in (tester.segments if tester is not None and tester is not evaluator else ())
        ],
        **importance_report(config.study_name, config.storage, outcome),
    }
    full: FullAnalysis | None = None
    if chosen is not None:
        # Look-ahead gate (issue 11, item 6; core/study/lookahead.py): raises on a signal
        # that uses a later bar, else its report joins the analysis.
        analysis["lookahead"] = lookahead_analysis(
            evaluator, [c.params for c in candidates], signals=data.signals
        )
        full = evaluator.full_analysis(chosen.params, Period.ALL)
        if full.max_relative_difference > VECTORBT_TOLERANCE:
            raise RuntimeError(
                f"level {spec.level}: the engine and vectorbt disagree on the chosen set by a "
                f"relative {full.max_relative_difference:.3g} (engine {full.engine_metrics}, "
                f"vectorbt {full.metrics}); refusing to publish"
            )
        if curriculum.selection == "plateau":
            # The chosen set's neighbours on validation, for the level's sensitivity plot.
            analysis["plateau"] = plateau_neighbourhood(
                chosen,
                _validation(evaluator),
                curriculum.parameters,
                fraction=curriculum.plateau_fraction,
            ).to_json()
        analysis["vectorbt_check"] = {
            "max_relative_difference": full.max_relative_difference,
            "trades": full.trades.height,
        }
        if tester is not None:
            test = tester.evaluate(chosen.params, Period.TEST).as_dict()
        if spec.robustness:
            context = StudyContext(
                study_name=config.study_name,
                storage=config.storage,
                seed=config.seed,
                constraints=curriculum.constraints,
                space=curriculum.parameters,
                n_trials=walk_forward_trials,
                batch_size=config.batch_size,
            )
            extra, stress, more = _robustness(
                spec, curriculum, evaluator, tester, outcome, chosen.params, context, trials_tried
            )
            test.update(extra)
            analysis.update(more)
        criteria = evaluate_pass_criteria(spec.pass_criteria, test, _UNMEASURED)
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
        parameter_shift=shift,
        progression=progression,
        tries=tuple(tries),
        analysis=analysis,
        chosen_trades=full.trades if full else None,
        chosen_equity=full.equity if full else None,
        chain_trials=chain_trials + len(outcome.trials),
    )


def skipped_level_result(spec: LevelSpec, previous: LevelResult) -> LevelResult:
    """The stored result of a level the previous one allowed to skip: no study, the previous
    choice carried forward so the next level still warm-starts from it."""
    reasons = previous.progression.reasons if previous.progression else ()
    reason = f"skipped: level {previous.level} met the skip rule " + "; ".join(reasons)
    return LevelResult(
        level=spec.level,
        name=spec.name,
        direction=spec.direction.value,
        passed=False,
        skipped=True,
        chosen=previous.chosen,
        progression=Progression(Decision.ADVANCE, (reason,)),
        chain_trials=previous.chain_trials,
    )


def holdout_starts(bars: Mapping[str, pl.DataFrame], holdout_days: int) -> dict[str, datetime]:
    """Per instrument, the first instant of the hold-out: last bar minus ``holdout_days``."""
    out: dict[str, datetime] = {}
    for instrument, frame in bars.items():
        last = frame["ts"].max()
        if isinstance(last, datetime):
            out[instrument] = last - timedelta(days=holdout_days)
    return out
