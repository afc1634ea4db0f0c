"""Study plots as figures: every plot has a static (matplotlib) and an interactive (plotly)
figure, also for an empty study, and long equity curves are thinned without losing their deepest
drawdown. Writing them as files: ``tests/test_tracking_plots.py``."""

from datetime import datetime, timedelta
from typing import Any, cast

import numpy as np
import polars as pl
import pytest

from ffe_dagster.core.reporting.plots import (
    StudyPlot,
    StudyPlotData,
    equity_drawdown,
    optimization_history,
    parameter_importance,
    study_plots,
)
from ffe_dagster.core.study.level_records import trials_table
from ffe_dagster.core.study.optimize import StudyOutcome, TrialRecord

STEMS = (
    "optimization_history",
    "parameter_importance",
    "pareto_front",
    "equity_drawdown",
    "sensitivity_surface",
)


def study_trials(n: int = 30) -> pl.DataFrame:
    rng = np.random.default_rng(7)
    records = tuple(
        TrialRecord(
            number=i,
            params={"stop_loss_pct": float(rng.uniform(0.5, 5)), "stop_mode": "fixed"},
            metrics={
                "sharpe": float(rng.normal()),
                "win_rate_pct": float(rng.uniform(30, 60)),
                "max_drawdown_pct": float(rng.uniform(1, 20)),
            },
            feasible=i % 3 != 0,
        )
        for i in range(n)
    )
    return trials_table(StudyOutcome("s", records, (1, 4), resumed_trials=0, new_trials=n))


def equity_frame(hours: int, start: datetime, instrument: str) -> pl.DataFrame:
    rng = np.random.default_rng(3)
    equity = 10_000 * np.cumprod(1 + rng.normal(0, 0.002, hours))
    peak = np.maximum.accumulate(equity)
    return pl.DataFrame(
        {
            "instrument": [instrument] * hours,
            "ts": [start + timedelta(hours=h) for h in range(hours)],
            "equity": equity,
            "drawdown_pct": (1 - equity / peak) * 100,
        }
    )


def traces(plot: StudyPlot) -> list[dict[str, Any]]:
    """The plotly figure's traces as plain dicts of their properties, numbers as arrays (plotly's
    own trace classes are untyped, and ``to_plotly_json`` encodes arrays as base64)."""
    data = cast("tuple[Any, ...]", plot.interactive.data)
    return [{key: trace[key] for key in ("name", "x", "y", "text")} for trace in data]


def no_data_notes(plot: StudyPlot) -> list[str]:
    """The "no data" texts of both figures (annotations of the plotly one, texts of the axes)."""
    layout = plot.interactive.to_plotly_json()["layout"]
    interactive = [a["text"] for a in layout.get("annotations", ()) if "no data" in a["text"]]
    static = [t.get_text() for ax in plot.static.axes for t in ax.texts]
    return [*interactive, *(t for t in static if "no data" in t)]


def test_all_plots_of_a_study() -> None:
    equity = pl.concat(
        [
            equity_frame(500, datetime(2020, 1, 1), "BTC_USDT"),
            equity_frame(300, datetime(2022, 1, 1), "BTC_USDT"),  # a second window, after a gap
            equity_frame(400, datetime(2021, 1, 1), "EUR_USD"),
        ]
    )
    data = StudyPlotData(
        trials=study_trials(),
        importance={"stop_loss_pct": 0.8, "stop_mode": 0.2},
        equity=equity,
        title="L1 test",
    )
    plots = study_plots(data)
    assert tuple(p.name for p in plots) == STEMS
    for plot in plots:
        assert plot.static.axes and traces(plot), plot.name
        assert no_data_notes(plot) == [], plot.name
        title = plot.interactive.to_plotly_json()["layout"]["title"]["text"]
        assert title.startswith("L1 test: ")
    front = next(t for t in traces(plots[2]) if t["name"] == "Pareto front")
    hover = [text.split("<br>")[0] for text in front["text"]]
    assert hover == ["trial 1", "trial 4"]  # the hover names the front's trials
    equity_traces = traces(plots[3])
    assert {t["name"] for t in equity_traces} >= {"BTC_USDT", "EUR_USD"}
    btc = next(t for t in equity_traces if t["name"] == "BTC_USDT")
    assert sum(v is None for v in btc["x"]) == 1  # the line breaks once, at the windows' gap


def test_empty_study_gives_no_data_figures() -> None:
    empty = trials_table(StudyOutcome("s", (), (), resumed_trials=0, new_trials=0))
    data = StudyPlotData(trials=empty, importance={}, equity=None, importance_note="too few")
    plots = study_plots(data)
    assert tuple(p.name for p in plots) == STEMS
    for plot in plots:
        assert len(no_data_notes(plot)) == 2, plot.name  # said in both figures
    assert "no data: too few" in no_data_notes(plots[1])


def test_history_without_a_feasible_trial() -> None:
    trials = study_trials().with_columns(pl.lit(False).alias("feasible"))
    plot = optimization_history(trials)
    assert plot.name == "optimization_history"
    by_name = {t["name"]: t for t in traces(plot)}
    assert len(by_name["feasible trial"]["x"]) == 0 and len(by_name["infeasible"]["x"]) == 30
    assert np.isnan(np.asarray(by_name["best feasible so far"]["y"], dtype=float)).all()


@pytest.mark.parametrize("max_points", [200, 10_000])
def test_equity_thinning_keeps_the_deepest_drawdown(max_points: int) -> None:
    frame = equity_frame(5000, datetime(2020, 1, 1), "BTC_USDT")
    deepest = float(frame["drawdown_pct"].max())  # type: ignore[arg-type]
    plot = equity_drawdown(frame, max_points=max_points)
    drawdown = np.asarray(traces(plot)[1]["y"], dtype=float)  # equity, then -drawdown
    assert drawdown.size <= min(max_points, 5000)
    assert float(np.nanmin(drawdown)) == pytest.approx(-deepest)
    static = plot.static.axes[1].lines[0].get_ydata()
    assert float(np.nanmin(np.asarray(static, dtype=float))) == pytest.approx(-deepest)


def test_every_label_fits_inside_its_figure() -> None:
    # Figures have fixed margins instead of a layout pass (one draw per PNG), so every text
    # drawn (ticks, axis labels, titles, colorbar label, a long parameter name) must fit.
    data = StudyPlotData(
        trials=study_trials(),
        importance={"stop_loss_pct": 0.8, "a_rather_long_parameter_name": 0.2},
        equity=equity_frame(500, datetime(2020, 1, 1), "BTC_USDT"),
        title="L1 test",
    )
    for plot in study_plots(data):
        fig = plot.static
        fig.canvas.draw()
        used = fig.get_tightbbox()  # inches: everything drawn, ticks and labels included
        page = fig.bbox_inches
        assert used is not None, plot.name
        assert used.x0 >= page.x0 and used.y0 >= page.y0, (plot.name, used, page)
        assert used.x1 <= page.x1 and used.y1 <= page.y1, (plot.name, used, page)


def test_a_very_long_parameter_name_still_leaves_room_for_the_bars() -> None:
    plot = parameter_importance({"x" * 120: 0.6, "short": 0.4})
    left, right = plot.static.subplotpars.left, plot.static.subplotpars.right
    assert 0 < left <= 0.5 < right  # capped at half the figure; uncapped, matplotlib refuses
