"""A study's convergence as step series, by trial number: the best feasible value of each
objective found so far, and the trial rate. Tracking logs them as step metrics, so a tracking UI
draws the optimization history and overlays cycles."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ffe_dagster.core.study.optimize import DIRECTIONS, OBJECTIVES, TrialRecord


@dataclass(frozen=True, slots=True)
class StepValue:
    """One point of a series: ``value`` of ``name`` at trial number ``step``."""

    name: str
    step: int
    value: float


def best_feasible_so_far(trials: Sequence[TrialRecord]) -> tuple[StepValue, ...]:
    """Per objective (``best_feasible_<objective>``), the best train value among the feasible
    trials numbered up to each trial, in trial-number order.

    Sharpe and win rate count higher as better, drawdown lower (the study's directions). A series
    starts at the first feasible trial: before it there is no best value to show, and an
    infeasible trial never sets one however good its numbers look.
    """
    best: dict[str, float] = {}
    points: list[StepValue] = []
    for trial in sorted(trials, key=lambda t: t.number):
        if trial.feasible:
            for name, direction in zip(OBJECTIVES, DIRECTIONS, strict=True):
                value = trial.metrics.get(name)
                if value is None:
                    continue
                known = best.get(name)
                better = max if direction == "maximize" else min
                best[name] = value if known is None else better(known, value)
        points.extend(
            StepValue(f"best_feasible_{name}", trial.number, value) for name, value in best.items()
        )
    return tuple(points)


def trials_per_second(finished_at: Mapping[int, float], started_at: float) -> tuple[StepValue, ...]:
    """The trial rate (``trials_per_second``) at each trial this run finished: trials finished so
    far divided by the seconds since ``started_at``.

    ``finished_at`` maps trial numbers to the clock reading when each finished (the same clock
    as ``started_at``). Trials a resumed study had already stored are not in it: their time was
    spent by another run. A cumulative rate rather than one per trial, because batched
    evaluation finishes trials in bursts and a per-trial gap would swing between 0 and huge.
    """
    points: list[StepValue] = []
    for done, (number, clock) in enumerate(sorted(finished_at.items(), key=lambda x: x[1]), 1):
        elapsed = clock - started_at
        if elapsed <= 0:
            continue  # a burst finished within the clock's resolution: no rate to state yet
        points.append(StepValue("trials_per_second", number, done / elapsed))
    return tuple(points)
