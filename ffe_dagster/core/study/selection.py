"""Choosing on validation: the Pareto front's trials scored on the validation period, ranked."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ffe_dagster.core.study.evaluation import ParamValue
from ffe_dagster.core.study.level_specs import Constraints, ParamRange
from ffe_dagster.core.study.optimize import BatchObjective, StudyOutcome
from ffe_dagster.core.study.search_space import is_feasible


@dataclass(frozen=True, slots=True)
class Candidate:
    """A Pareto-front trial scored on the validation period: what a level proposes and what
    promotion sends to COLD (in validation order)."""

    number: int
    params: Mapping[str, ParamValue]
    train: Mapping[str, float]
    validation: Mapping[str, float]
    validation_feasible: bool

    @property
    def validation_sharpe(self) -> float:
        """The Sharpe ratio the candidate scored on validation (COLD's reference)."""
        return float(self.validation["sharpe"])

    def to_json(self) -> dict[str, Any]:
        """The candidate as a stored level result holds it."""
        return {
            "number": self.number,
            "params": dict(self.params),
            "train": dict(self.train),
            "validation": dict(self.validation),
            "validation_feasible": self.validation_feasible,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Candidate":
        """A candidate read back from a stored level result (``to_json``'s mapping). A row
        without train metrics or feasibility (hand-made ones) reads as none / not feasible."""
        return cls(
            number=int(row["number"]),
            params=dict(row["params"]),
            train=dict(row.get("train") or {}),
            validation=dict(row.get("validation") or {}),
            validation_feasible=bool(row.get("validation_feasible", False)),
        )


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


@dataclass(frozen=True, slots=True)
class PlateauScore:
    """A candidate's neighbourhood on validation: how its Sharpe holds under small moves."""

    candidate: Candidate
    neighbours: int
    mean_sharpe: float  # over the candidate and its neighbours
    worst_sharpe: float


def neighbourhood(
    params: Mapping[str, ParamValue], space: Sequence[ParamRange], *, fraction: float
) -> list[dict[str, ParamValue]]:
    """The sets one small move away from ``params``: each numeric parameter in turn moved down
    and up by ``fraction`` of its search range (kept inside the range, rounded to its step;
    a move that changes nothing is dropped). Choice parameters are not moved."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    out: list[dict[str, ParamValue]] = []
    for p in space:
        value = params.get(p.name)
        if p.choices or value is None or isinstance(value, str) or p.high <= p.low:
            continue
        for sign in (-1.0, 1.0):
            moved = min(p.high, max(p.low, float(value) + sign * fraction * (p.high - p.low)))
            if p.step:
                moved = p.low + round((moved - p.low) / p.step) * p.step
            new: ParamValue = round(moved) if isinstance(value, int) else moved
            if new != value:
                out.append({**params, p.name: new})
    return out


def rank_by_plateau(
    candidates: Sequence[Candidate],
    validate: BatchObjective,
    space: Sequence[ParamRange],
    *,
    fraction: float = 0.05,
) -> list[PlateauScore]:
    """Candidates ordered by how well their validation Sharpe survives small moves (plateau
    selection): every neighbour of every candidate is scored on validation in one batched call
    of ``validate``; the order is feasible-on-validation first, then the mean Sharpe over each
    candidate and its neighbours, then the candidate's own order. The test period plays no part.
    """
    groups = [neighbourhood(c.params, space, fraction=fraction) for c in candidates]
    flat = [n for group in groups for n in group]
    metrics = list(validate(flat)) if flat else []
    if len(metrics) != len(flat):
        raise ValueError(f"validate returned {len(metrics)} results for {len(flat)} sets")
    scores: list[PlateauScore] = []
    start = 0
    for candidate, group in zip(candidates, groups, strict=True):
        sharpes = [candidate.validation["sharpe"]]
        sharpes += [m.sharpe for m in metrics[start : start + len(group)]]
        start += len(group)
        scores.append(
            PlateauScore(
                candidate=candidate,
                neighbours=len(group),
                mean_sharpe=sum(sharpes) / len(sharpes),
                worst_sharpe=min(sharpes),
            )
        )
    order = {id(c): i for i, c in enumerate(candidates)}
    return sorted(
        scores,
        key=lambda s: (
            not s.candidate.validation_feasible,
            -s.mean_sharpe,
            order[id(s.candidate)],
        ),
    )


@dataclass(frozen=True, slots=True)
class Neighbour:
    """One set of a plateau neighbourhood and the Sharpe it scored on validation."""

    params: Mapping[str, ParamValue]
    validation_sharpe: float


@dataclass(frozen=True, slots=True)
class PlateauNeighbourhood:
    """The chosen set's neighbourhood on validation, as plateau selection scored it: the set's
    own validation Sharpe and each neighbour's (``neighbourhood``, moved by ``fraction``)."""

    fraction: float
    number: int  # the chosen trial
    validation_sharpe: float
    neighbours: tuple[Neighbour, ...]

    @property
    def mean_sharpe(self) -> float:
        """The mean validation Sharpe over the set and its neighbours (what plateau ranks by)."""
        values = [self.validation_sharpe, *(n.validation_sharpe for n in self.neighbours)]
        return sum(values) / len(values)

    def to_json(self) -> dict[str, Any]:
        """The neighbourhood as the level's analysis stores it (plain JSON values)."""
        return {
            "fraction": self.fraction,
            "number": self.number,
            "validation_sharpe": self.validation_sharpe,
            "mean_sharpe": self.mean_sharpe,
            "neighbours": [
                {"params": dict(n.params), "validation_sharpe": n.validation_sharpe}
                for n in self.neighbours
            ],
        }

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> "PlateauNeighbourhood":
        """Read back what ``to_json`` wrote."""
        return cls(
            fraction=float(row["fraction"]),
            number=int(row["number"]),
            validation_sharpe=float(row["validation_sharpe"]),
            neighbours=tuple(
                Neighbour(dict(n["params"]), float(n["validation_sharpe"]))
                for n in row["neighbours"]
            ),
        )


def plateau_neighbourhood(
    chosen: Candidate, validate: BatchObjective, space: Sequence[ParamRange], *, fraction: float
) -> PlateauNeighbourhood:
    """The chosen candidate's neighbours scored on validation in one batched call of
    ``validate`` (the values ``rank_by_plateau`` averaged), for the level's sensitivity plot."""
    group = neighbourhood(chosen.params, space, fraction=fraction)
    metrics = list(validate(group)) if group else []
    if len(metrics) != len(group):
        raise ValueError(f"validate returned {len(metrics)} results for {len(group)} sets")
    return PlateauNeighbourhood(
        fraction=fraction,
        number=chosen.number,
        validation_sharpe=chosen.validation_sharpe,
        neighbours=tuple(
            Neighbour(params, float(m.sharpe)) for params, m in zip(group, metrics, strict=True)
        ),
    )
