"""Run one curriculum level end to end: data windows, study, selection, test, pass criteria.

This is the whole computation behind a level asset; the asset only loads data, passes storage in,
and publishes the returned ``LevelOutcome``.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import polars as pl
from optuna.storages import BaseStorage

from ffe_dagster.core.backtest.metrics import Metrics
from ffe_dagster.core.backtest.reference import Segment
from ffe_dagster.core.backtest.strategies import EntryStrategy, FileSignals, get_strategy
from ffe_dagster.core.study.eras import LevelData, level_windows
from ffe_dagster.core.study.evaluation import FullAnalysis, LevelEvaluator, Params, Period
from ffe_dagster.core.study.level_result import LevelResult, LevelTry
from ffe_dagster.core.study.level_robustness import (
    StudyContext,
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
)
from ffe_dagster.core.study.level_test import (
    STUDY_SIDE_NUMBERS,
    TEST_SIDE_ANALYSIS,
    TestSide,
    judge_on_test,
    level_test_evaluator,
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


def _test_side(
    spec: LevelSpec, curriculum: CurriculumSpec, data: LevelData, evaluator: LevelEvaluator
) -> LevelEvaluator | None:
    # With eras the test period is the test era; without (hand-built specs), each segment's tail.
    if curriculum.test_era_start:
        return level_test_evaluator(spec, curriculum, data)
    return evaluator


def _judge(
    spec: LevelSpec,
    curriculum: CurriculumSpec,
    evaluator: LevelEvaluator,
    tester: LevelEvaluator | None,
    chosen: Params | None,
    study_numbers: Mapping[str, float],
) -> TestSide:
    # The test side, as from scratch and as on a retest: the test era's segments are listed
    # only when they are not the level's own (with eras).
    listed = tester.segments if tester is not None and tester is not evaluator else ()
    return judge_on_test(
        spec, curriculum, tester, chosen, study_numbers=study_numbers, test_segments=listed
    )


def _robustness(
    curriculum: CurriculumSpec,
    evaluator: LevelEvaluator,
    outcome: StudyOutcome,
    chosen: Params,
    context: StudyContext,
    trials_tried: int,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Level-4 robustness of the study side: DSR and PBO on train, walk-forward on the
    train/validation segments. Returns the numbers the test side judges and the analysis."""
    overfit = overfitting_report(
        evaluator, outcome, chosen, curriculum.robustness, trials_tried=trials_tried
    )
    wf = walk_forward(evaluator, curriculum.robustness, context)
    numbers = {
        "deflated_sharpe": overfit["deflated_sharpe"],
        "pbo": overfit.get("pbo", 1.0),
        "walk_forward_efficiency": wf["walk_forward_efficiency"],
    }
    return numbers, {"overfitting": overfit, "walk_forward": wf}


@dataclass(frozen=True, slots=True)
class _Tries:
    # The study's tries (a level repeats with more trials when progression says so).
    outcome: StudyOutcome
    candidates: list[Candidate]
    shift: dict[str, float]
    progression: Progression
    tries: tuple[LevelTry, ...]
    config: StudyConfig

    @property
    def chosen(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None


def _run_tries(
    curriculum: CurriculumSpec,
    evaluator: LevelEvaluator,
    study: StudyConfig,
    warm_start: Params | None,
    on_trial: Callable[[TrialRecord, int], None] | None,
    tries_allowed: int,
) -> _Tries:
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
            return _Tries(outcome, candidates, shift, progression, tuple(tries), config)
        config = replace(config, n_trials=next_trial_count(curriculum.progression, config.n_trials))


def _checked_full_analysis(level: int, evaluator: LevelEvaluator, chosen: Params) -> FullAnalysis:
    # The chosen set re-run through vectorbt over the train/validation bars; a disagreement
    # with the engine refuses the level.
    full = evaluator.full_analysis(chosen, Period.ALL)
    if full.max_relative_difference > VECTORBT_TOLERANCE:
        raise RuntimeError(
            f"level {level}: the engine and vectorbt disagree on the chosen set by a "
            f"relative {full.max_relative_difference:.3g} (engine {full.engine_metrics}, "
            f"vectorbt {full.metrics}); refusing to publish"
        )
    return full


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

    Everything up to the choice and its robustness (the study side) reads only the level's
    train/validation segments; the test side (``level_test.judge_on_test``) reads the test
    period, and is all ``retest_level`` computes again when only the test era changed.
    """
    tries_allowed = max_tries or curriculum.progression.max_tries
    evaluator = level_evaluator(spec, curriculum, data)
    segments = evaluator.segments
    run = _run_tries(curriculum, evaluator, study, warm_start, on_trial, tries_allowed)
    outcome, candidates, chosen, config = run.outcome, run.candidates, run.chosen, run.config
    # Every trial that fed the choice: the chain's, this study's (all tries share it) and the
    # candidates COLD may still pick among.
    trials_tried = chain_trials + len(outcome.trials) + len(candidates)
    analysis: dict[str, Any] = {
        "stability": stability(run.shift),
        "trials_tried": trials_tried,
        **importance_report(config.study_name, config.storage, outcome),
    }
    full: FullAnalysis | None = None
    numbers: dict[str, float] = {}
    if chosen is not None:
        # Look-ahead gate (issue 11, item 6; core/study/lookahead.py): raises on a signal
        # that uses a later bar, else its report joins the analysis.
        analysis["lookahead"] = lookahead_analysis(
            evaluator, [c.params for c in candidates], signals=data.signals
        )
        full = _checked_full_analysis(spec.level, evaluator, chosen.params)
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
            numbers, more = _robustness(
                curriculum, evaluator, outcome, chosen.params, context, trials_tried
            )
            analysis.update(more)
    tester = _test_side(spec, curriculum, data, evaluator)
    side = _judge(spec, curriculum, evaluator, tester, chosen.params if chosen else None, numbers)
    return LevelOutcome(
        level=spec.level,
        name=spec.name,
        direction=spec.direction.value,
        segments=tuple((s.instrument, str(s.ts[0]), str(s.ts[-1]), len(s)) for s in segments),
        study=outcome,
        candidates=tuple(candidates),
        chosen=chosen,
        test=side.test,
        stress=side.stress,
        criteria=side.criteria,
        parameter_shift=run.shift,
        progression=run.progression,
        tries=run.tries,
        analysis={**analysis, **side.analysis},
        chosen_trades=full.trades if full else None,
        chosen_equity=full.equity if full else None,
        chain_trials=chain_trials + len(outcome.trials),
    )


def retest_level(
    spec: LevelSpec, curriculum: CurriculumSpec, data: LevelData, stored: LevelResult
) -> LevelResult:
    """``stored`` with its test side computed again on ``data``; its study side kept.

    For a level whose study side's inputs are unchanged (``level_reuse.retestable``: the same
    study with the same trials, warm start, settings and code) while its test period's bars may
    have changed (a new bar lengthens the test era, the hold-out starts later): the study
    side (choice, progression, look-ahead and vectorbt checks, importance, deflated Sharpe, PBO,
    walk-forward) depends on none of them, so only the test metrics, stress periods, cost
    sensitivity and pass criteria are computed, by the functions ``run_level`` calls. The result
    equals ``run_level``'s on ``data`` with the same study (``tests/core/test_level_retest.py``);
    it ran no trial (``new_trials`` 0), and its MLflow run and keys are the caller's to set.
    """
    if stored.skipped:
        raise ValueError(f"level {spec.level}: a skipped level has no test side to compute")
    evaluator = level_evaluator(spec, curriculum, data)
    tester = _test_side(spec, curriculum, data, evaluator)
    numbers = {k: stored.test[k] for k in STUDY_SIDE_NUMBERS if k in stored.test}
    chosen = stored.chosen.params if stored.chosen else None
    side = _judge(spec, curriculum, evaluator, tester, chosen, numbers)
    kept = {k: v for k, v in stored.analysis.items() if k not in TEST_SIDE_ANALYSIS}
    return replace(
        stored,
        passed=chosen is not None and all(c.passed for c in side.criteria),
        new_trials=0,
        test=side.test,
        stress=side.stress,
        criteria=side.criteria,
        analysis={**kept, **side.analysis},
        mlflow_run_id=None,
        reuse_key=None,
        reused=False,
        reused_from_run=None,
        study_key=None,
        study_side_from_run=stored.plots_run,
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
