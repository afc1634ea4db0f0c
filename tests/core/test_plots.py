"""Study plots: every plot is written as a non-empty PNG and a plotly HTML, also for an empty
study, and long equity curves are thinned without losing their deepest drawdown."""

import base64
import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ffe_dagster.core.reporting.plots import (
    StudyPlotData,
    equity_drawdown,
    optimization_history,
    write_study_plots,
)
from ffe_dagster.core.study.level_records import trials_table
from ffe_dagster.core.study.optimize import StudyOutcome, TrialRecord

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STEMS = ("optimization_history", "parameter_importance", "pareto_front", "equity_drawdown")


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


def assert_written(paths: list[Path], stems: tuple[str, ...]) -> None:
    assert sorted(p.name for p in paths) == sorted(
        f"{s}.{ext}" for s in stems for ext in ("png", "html")
    )
    for path in paths:
        data = path.read_bytes()
        assert len(data) > 1000, path
        if path.suffix == ".png":
            assert data.startswith(PNG_MAGIC)
        else:
            html = data.decode()
            assert "plotly" in html and "Plotly.newPlot" in html


def test_all_plots_of_a_study(tmp_path: Path) -> None:
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
    paths = write_study_plots(data, tmp_path)
    assert_written(paths, STEMS)
    assert all(p.parent == tmp_path for p in paths)
    pareto = (tmp_path / "pareto_front.html").read_text()
    assert "Pareto front" in pareto and "trial 4" in pareto  # hover names the front's trials
    assert "no data" not in (tmp_path / "equity_drawdown.html").read_text()


def test_empty_study_writes_no_data_figures(tmp_path: Path) -> None:
    empty = trials_table(StudyOutcome("s", (), (), resumed_trials=0, new_trials=0))
    data = StudyPlotData(trials=empty, importance={}, equity=None, importance_note="too few")
    paths = write_study_plots(data, tmp_path)
    assert_written(paths, STEMS)
    for stem in STEMS:
        assert "no data" in (tmp_path / f"{stem}.html").read_text()
    assert "no data: too few" in (tmp_path / "parameter_importance.html").read_text()


def test_history_without_a_feasible_trial(tmp_path: Path) -> None:
    trials = study_trials().with_columns(pl.lit(False).alias("feasible"))
    paths = optimization_history(trials, tmp_path)
    assert_written(paths, ("optimization_history",))


@pytest.mark.parametrize("max_points", [200, 10_000])
def test_equity_thinning_keeps_the_deepest_drawdown(tmp_path: Path, max_points: int) -> None:
    frame = equity_frame(5000, datetime(2020, 1, 1), "BTC_USDT")
    deepest = float(frame["drawdown_pct"].max())  # type: ignore[arg-type]
    paths = equity_drawdown(frame, tmp_path, max_points=max_points, include_plotlyjs=True)
    assert_written(paths, ("equity_drawdown",))
    html = paths[1].read_text()
    assert len(html) > 3_000_000  # plotly.js embedded: the file opens offline
    drawdown = _trace_y(html, 1)  # traces: equity, then the (negated) drawdown
    assert drawdown.size <= min(max_points, 5000)
    assert float(np.nanmin(drawdown)) == pytest.approx(-deepest)


def _trace_y(html: str, index: int) -> np.ndarray:
    # Plotly writes numeric arrays as base64 typed arrays inside the Plotly.newPlot call.
    match = re.search(r"Plotly\.newPlot\(\s*\"[^\"]+\",\s*(\[.*?\]),\s*\{", html, re.S)
    assert match is not None
    y = json.loads(match.group(1))[index]["y"]
    return np.frombuffer(base64.b64decode(y["bdata"]), dtype=np.dtype(y["dtype"]))
