"""The parameter-sensitivity surface's numbers (``core.reporting.sensitivity``) on a hand-made
trials table: axes by importance, numeric parameters only, the chosen set and the plateau."""

import math

import polars as pl

from ffe_dagster.core.reporting.sensitivity import sensitivity_surface, sensitivity_surface_data
from ffe_dagster.core.study.selection import Candidate, Neighbour, PlateauNeighbourhood

TRIALS = pl.DataFrame(
    {
        "number": [2, 0, 1, 3],
        "param_a": [1.0, 2.0, 3.0, 4.0],
        "param_b": [10, 20, 30, 40],
        "param_mode": ["fixed", "trailing", "fixed", "fixed"],
        "train_sharpe": [0.5, -1.0, 2.0, None],  # trial 3 failed: no Sharpe, not drawn
        "feasible": [True, False, True, True],
    }
)


def test_axes_follow_importance_and_points_are_the_trials() -> None:
    chosen = Candidate(
        1, {"a": 3.0, "b": 30, "mode": "fixed"}, {"sharpe": 2.0}, {"sharpe": 0.8}, True
    )
    plateau = PlateauNeighbourhood(0.1, 1, 0.8, (Neighbour({"a": 2.7, "b": 30}, 0.4),))
    surface = sensitivity_surface_data(
        TRIALS, {"b": 0.7, "a": 0.2, "mode": 0.1}, chosen, plateau.to_json()
    )
    assert surface is not None
    assert (surface.x_param, surface.y_param, surface.axes_by) == ("b", "a", "importance")
    assert [(p.number, p.x, p.y, p.sharpe, p.feasible) for p in surface.trials] == [
        (0, 20.0, 2.0, -1.0, False),
        (1, 30.0, 3.0, 2.0, True),
        (2, 10.0, 1.0, 0.5, True),
    ]
    assert surface.chosen is not None and (surface.chosen.x, surface.chosen.y) == (30.0, 3.0)
    assert surface.chosen.validation_sharpe == 0.8
    assert surface.plateau is not None and [(p.x, p.y, p.sharpe) for p in surface.plateau] == [
        (30.0, 2.7, 0.4)
    ]
    assert surface.plateau_mean_sharpe is not None
    assert math.isclose(surface.plateau_mean_sharpe, (0.8 + 0.4) / 2)
    data = surface.to_json()
    assert data["sharpe"]["trials"] == "train" and data["sharpe"]["plateau"] == "validation"
    plot = sensitivity_surface(surface)
    assert plot.name == "sensitivity_surface" and plot.data is surface


def test_without_importance_the_first_numeric_parameters_and_without_one_no_data() -> None:
    surface = sensitivity_surface_data(TRIALS, {})
    assert surface is not None
    assert (surface.x_param, surface.y_param, surface.axes_by) == ("a", "b", "parameter order")
    assert surface.chosen is None and surface.plateau is None
    one = sensitivity_surface_data(TRIALS.drop("param_b"), {"a": 1.0})
    assert one is not None and one.y_param is None  # one parameter: drawn against Sharpe
    assert sensitivity_surface_data(TRIALS.drop("param_a", "param_b"), {}) is None
    empty = sensitivity_surface(None)
    assert empty.data is None
    assert any("no data" in t.get_text() for ax in empty.static.axes for t in ax.texts)
