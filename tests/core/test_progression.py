"""Progression rules (docs/spec.md §4) and how parameter stability is measured."""

import pytest

from ffe_dagster.core.study.level_specs import ParamRange, ProgressionSpec
from ffe_dagster.core.study.levels import parameter_shift
from ffe_dagster.core.study.progression import Decision, decide, next_trial_count

SPEC = ProgressionSpec()


def _val(win: float, sharpe: float, total: float) -> dict[str, float]:
    return {"win_rate_pct": win, "sharpe": sharpe, "total_return_pct": total}


@pytest.mark.parametrize(
    ("validation", "shift", "decision"),
    [
        (_val(55, 1.0, 2.0), {}, Decision.ADVANCE),  # > 50 %, positive, stable
        (_val(61, 1.6, 2.0), {}, Decision.SKIP_NEXT),  # > 60 % and Sharpe > 1.5
        (_val(61, 1.5, 2.0), {}, Decision.ADVANCE),  # Sharpe exactly 1.5 is not above it
        (_val(44.9, 2.0, 2.0), {}, Decision.REPEAT),  # < 45 %
        (_val(70, 2.0, -0.1), {}, Decision.REPEAT),  # negative return beats a high win rate
        (_val(70, 2.0, 3.0), {"stop_loss_pct": 0.6}, Decision.REPEAT),  # swing > 0.5
        (_val(70, 2.0, 3.0), {"stop_loss_pct": 0.5}, Decision.SKIP_NEXT),  # 0.5 is not > 0.5
        (_val(47, 0.5, 1.0), {}, Decision.ADVANCE),  # between 45 and 50: advance, say so
    ],
)
def test_decisions_follow_the_spec(
    validation: dict[str, float], shift: dict[str, float], decision: Decision
) -> None:
    out = decide(SPEC, validation, shift)
    assert out.decision is decision
    assert out.reasons


def test_every_repeat_reason_is_reported() -> None:
    out = decide(SPEC, _val(40, 0.1, -1.0), {"take_profit_pct": 0.9})
    assert out.decision is Decision.REPEAT
    assert len(out.reasons) == 3
    assert "take_profit_pct" in out.reasons[2] and "90%" in out.reasons[2]


def test_no_candidate_repeats() -> None:
    assert decide(SPEC, None, {}).decision is Decision.REPEAT


def test_a_repeat_has_half_as_many_trials_again() -> None:
    assert next_trial_count(SPEC, 100) == 150
    assert next_trial_count(SPEC, 150) == 225
    assert next_trial_count(SPEC, 1) == 2  # always at least one more


def test_parameter_shift_is_a_share_of_the_search_range() -> None:
    space = (ParamRange("position_size_pct", 1.0, 3.0), ParamRange("mode", choices=("a", "b")))
    shift = parameter_shift(
        {"position_size_pct": 1.0, "fast_window": 10, "mode": "a"},
        {"position_size_pct": 2.0, "fast_window": 15, "mode": "b"},
        space,
    )
    # 1 -> 2 over a range of width 2 is half the range; fast_window has no range here, so it is
    # relative to its previous value (5 / 10); categorical parameters are not measured.
    assert shift == {"position_size_pct": 0.5, "fast_window": 0.5}
    assert parameter_shift(None, {"x": 1.0}) == {}
