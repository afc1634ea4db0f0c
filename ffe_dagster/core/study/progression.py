"""Progression through the curriculum: advance, repeat with more trials, or skip the next level.

docs/spec.md §4: advance when the win rate is above 50 %, returns are positive and parameters are
stable; repeat (50 % more trials, at most 3 tries) when the win rate is below 45 %, parameters swing
widely or returns are negative; skip the next level when the win rate is above 60 % and Sharpe above
1.5. The decision reads the chosen trial's validation metrics: the test period never steers it.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from ffe_dagster.core.study.level_specs import ProgressionSpec


class Decision(StrEnum):
    """What the curriculum does after a level."""

    ADVANCE = "advance"
    REPEAT = "repeat"
    SKIP_NEXT = "skip_next"


@dataclass(frozen=True, slots=True)
class Progression:
    """A decision with its reasons, in words an operator can read."""

    decision: Decision
    reasons: tuple[str, ...]


def decide(
    spec: ProgressionSpec,
    validation: Mapping[str, float] | None,
    parameter_shift: Mapping[str, float],
) -> Progression:
    """The progression decision for a level whose chosen trial scored ``validation``.

    ``parameter_shift`` is the relative change of each parameter from the previous level's
    choice (empty for the first level). Without a chosen trial the level repeats.
    """
    if validation is None:
        return Progression(Decision.REPEAT, ("no feasible candidate on validation",))
    win = validation["win_rate_pct"]
    sharpe = validation["sharpe"]
    total = validation["total_return_pct"]
    widest = max(parameter_shift.values(), default=0.0)
    widest_name = max(parameter_shift, key=lambda k: parameter_shift[k], default="")

    repeat: list[str] = []
    if win < spec.repeat_below_win_rate_pct:
        repeat.append(f"win rate {win:.1f}% < {spec.repeat_below_win_rate_pct:g}%")
    if total < 0:
        repeat.append(f"negative return ({total:.2f}%)")
    if widest > spec.max_param_shift:
        repeat.append(
            f"parameters swing: {widest_name} moved {widest:.0%} from the previous level "
            f"(> {spec.max_param_shift:.0%})"
        )
    if repeat:
        return Progression(Decision.REPEAT, tuple(repeat))
    if win > spec.skip_min_win_rate_pct and sharpe > spec.skip_min_sharpe:
        return Progression(
            Decision.SKIP_NEXT,
            (
                f"win rate {win:.1f}% > {spec.skip_min_win_rate_pct:g}% and Sharpe "
                f"{sharpe:.2f} > {spec.skip_min_sharpe:g}",
            ),
        )
    if win > spec.advance_min_win_rate_pct and total > 0:
        return Progression(
            Decision.ADVANCE,
            (f"win rate {win:.1f}% > {spec.advance_min_win_rate_pct:g}%, positive return, stable",),
        )
    return Progression(
        Decision.ADVANCE,
        (
            f"win rate {win:.1f}% is between {spec.repeat_below_win_rate_pct:g}% and "
            f"{spec.advance_min_win_rate_pct:g}%: advancing without the confidence to skip",
        ),
    )


def next_trial_count(spec: ProgressionSpec, current: int) -> int:
    """The trial count of a repeated try: ``repeat_trial_factor`` times the current one."""
    return max(current + 1, round(current * spec.repeat_trial_factor))
