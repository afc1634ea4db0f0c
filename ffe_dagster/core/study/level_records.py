"""A level's outcome as records: the stored level result and the trials table."""

import polars as pl

from ffe_dagster.core.study.level_result import LevelResult
from ffe_dagster.core.study.levels import LevelOutcome
from ffe_dagster.core.study.optimize import StudyOutcome


def outcome_result(outcome: LevelOutcome) -> LevelResult:
    """The stored result of a level's outcome (``to_json`` is the row: stored, logged to MLflow,
    read by promotion)."""
    return LevelResult(
        level=outcome.level,
        name=outcome.name,
        direction=outcome.direction,
        passed=outcome.passed,
        study_name=outcome.study.study_name,
        n_trials=len(outcome.study.trials),
        new_trials=outcome.study.new_trials,
        feasible_trials=sum(t.feasible for t in outcome.study.trials),
        pareto_size=len(outcome.study.pareto_numbers),
        segments=outcome.segments,
        chosen=outcome.chosen,
        candidates=outcome.candidates,
        test=outcome.test,
        stress=outcome.stress,
        criteria=outcome.criteria,
        parameter_shift=outcome.parameter_shift,
        progression=outcome.progression,
        tries=outcome.tries,
        chain_trials=outcome.chain_trials,
        stop_reason=outcome.study.stop_reason,
        analysis=outcome.analysis,
    )


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
