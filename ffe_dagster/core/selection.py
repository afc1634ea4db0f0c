"""Choosing on validation: the Pareto front's trials scored on the validation period, ranked."""

from collections.abc import Mapping
from dataclasses import dataclass

from ffe_dagster.core.curriculum import Constraints
from ffe_dagster.core.evaluation import ParamValue
from ffe_dagster.core.optimize import BatchObjective, StudyOutcome, is_feasible


@dataclass(frozen=True, slots=True)
class Candidate:
    """A Pareto-front trial scored on the validation period."""

    number: int
    params: Mapping[str, ParamValue]
    train: Mapping[str, float]
    validation: Mapping[str, float]
    validation_feasible: bool


def rank_on_validation(
    outcome: StudyOutcome,
    validate: BatchObjective,
    constraints: Constraints,
    *,
    min_validation_trades: int,
) -> list[Candidate]:
    """Pareto-front trials ordered for selection using the validation period only.

    Feasible-on-validation candidates come first, then by validation Sharpe, then by validation
    win rate. The test period plays no part here.
    """
    by_number = {t.number: t for t in outcome.trials}
    valid_constraints = Constraints(
        min_trades=min_validation_trades,
        max_drawdown_pct=constraints.max_drawdown_pct,
        min_win_rate_pct=constraints.min_win_rate_pct,
    )
    records = [by_number[number] for number in outcome.pareto_numbers]
    candidates: list[Candidate] = []
    for record, metrics in zip(records, validate([r.params for r in records]), strict=True):
        number = record.number
        candidates.append(
            Candidate(
                number=number,
                params=record.params,
                train=record.metrics,
                validation=metrics.as_dict(),
                validation_feasible=is_feasible(metrics, valid_constraints),
            )
        )
    return sorted(
        candidates,
        key=lambda c: (
            not c.validation_feasible,
            -c.validation["sharpe"],
            -c.validation["win_rate_pct"],
            c.number,
        ),
    )
