"""A level's outcome as plain values: the stored level result and the trials table."""

from typing import Any

import polars as pl

from ffe_dagster.core.study.levels import LevelOutcome
from ffe_dagster.core.study.optimize import StudyOutcome
from ffe_dagster.core.study.selection import Candidate


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
            {
                "name": c.name,
                "threshold": c.threshold,
                "value": c.value,
                "passed": c.passed,
                "note": c.note,
            }
            for c in outcome.criteria
        ],
        "parameter_shift": dict(outcome.parameter_shift),
        "progression": {
            "decision": outcome.progression.decision.value,
            "reasons": list(outcome.progression.reasons),
        },
        "tries": [dict(t) for t in outcome.tries],
        "chain_trials": outcome.chain_trials,
        "stop_reason": outcome.study.stop_reason,
        "analysis": outcome.analysis,
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
