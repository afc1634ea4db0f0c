"""Plateau selection (``core.study.selection.rank_by_plateau``), on hand-made validation scores: a
sharp peak loses to a candidate whose neighbours keep their Sharpe; all neighbours are scored in
one batched call."""

from collections.abc import Sequence

import pytest

from ffe_dagster.core.backtest.metrics import Metrics
from ffe_dagster.core.study.evaluation import Params
from ffe_dagster.core.study.level_specs import ParamRange
from ffe_dagster.core.study.selection import Candidate, neighbourhood, rank_by_plateau

SPACE = (
    ParamRange("x", 0.0, 10.0),
    ParamRange("n", 0.0, 100.0, step=1.0),
    ParamRange("mode", choices=("a", "b")),
)


def _metrics(sharpe: float) -> Metrics:
    return Metrics(sharpe, 0.0, 1.0, 50.0, 1.5, 1.0, 30, 5.0, 10.0)


def _candidate(number: int, params: Params, sharpe: float) -> Candidate:
    return Candidate(number, params, {}, {"sharpe": sharpe, "win_rate_pct": 50.0}, True)


def test_neighbourhood_by_hand() -> None:
    moved = neighbourhood({"x": 5.0, "n": 50, "mode": "a"}, SPACE, fraction=0.05)
    assert moved == [
        {"x": 4.5, "n": 50, "mode": "a"},
        {"x": 5.5, "n": 50, "mode": "a"},
        {"x": 5.0, "n": 45, "mode": "a"},
        {"x": 5.0, "n": 55, "mode": "a"},
    ]
    # at the edge of the range the move down changes nothing and is dropped
    edge = neighbourhood({"x": 0.0, "n": 100, "mode": "b"}, SPACE, fraction=0.05)
    assert edge == [{"x": 0.5, "n": 100, "mode": "b"}, {"x": 0.0, "n": 95, "mode": "b"}]
    with pytest.raises(ValueError, match="fraction"):
        neighbourhood({"x": 1.0}, SPACE, fraction=0.0)


def test_a_plateau_beats_a_sharp_peak_in_one_batched_call() -> None:
    peak = _candidate(1, {"x": 5.0, "n": 50, "mode": "a"}, 2.0)
    plateau = _candidate(2, {"x": 2.0, "n": 20, "mode": "a"}, 1.5)
    calls: list[int] = []

    def validate(batch: Sequence[Params]) -> list[Metrics]:
        calls.append(len(batch))
        return [_metrics(1.4 if float(p["x"]) < 3.0 and float(p["n"]) < 30 else 0.0) for p in batch]

    ranked = rank_by_plateau([peak, plateau], validate, SPACE)
    assert calls == [8]  # 4 neighbours each, scored together
    assert [s.candidate.number for s in ranked] == [2, 1]
    assert ranked[0].mean_sharpe == pytest.approx((1.5 + 4 * 1.4) / 5)  # 1.42
    assert ranked[1].mean_sharpe == pytest.approx(2.0 / 5)  # 0.4
    assert (ranked[1].worst_sharpe, ranked[1].neighbours) == (0.0, 4)
