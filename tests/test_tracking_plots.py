"""A study's plots written as files (``resources/tracking_plots.write_plots``): a non-empty PNG
and a plotly HTML page per plot, plotly.js from its CDN by default or embedded on request."""

import base64
import json
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ffe_dagster.core.reporting.plots import StudyPlotData, equity_drawdown, study_plots
from ffe_dagster.core.study.level_records import trials_table
from ffe_dagster.core.study.optimize import StudyOutcome
from ffe_dagster.resources.tracking_plots import write_plots
from tests.core.test_plots import STEMS, equity_frame, study_trials

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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


def test_all_plots_of_a_study_are_written(tmp_path: Path) -> None:
    equity = pl.concat(
        [
            equity_frame(500, datetime(2020, 1, 1), "BTC_USDT"),
            equity_frame(300, datetime(2022, 1, 1), "BTC_USDT"),
            equity_frame(400, datetime(2021, 1, 1), "EUR_USD"),
        ]
    )
    data = StudyPlotData(
        trials=study_trials(),
        importance={"stop_loss_pct": 0.8, "stop_mode": 0.2},
        equity=equity,
        title="L1 test",
    )
    folder = tmp_path / "plots"  # made by the writer
    paths = write_plots(study_plots(data), folder)
    assert_written(paths, STEMS)
    assert all(p.parent == folder for p in paths)
    pareto = (folder / "pareto_front.html").read_text()
    assert "Pareto front" in pareto and "trial 4" in pareto  # hover names the front's trials
    assert "no data" not in (folder / "equity_drawdown.html").read_text()
    assert len(pareto) < 1_000_000  # plotly.js from its CDN, not embedded


def test_an_empty_study_writes_no_data_files(tmp_path: Path) -> None:
    empty = trials_table(StudyOutcome("s", (), (), resumed_trials=0, new_trials=0))
    data = StudyPlotData(trials=empty, importance={}, equity=None, importance_note="too few")
    paths = write_plots(study_plots(data), tmp_path)
    assert_written(paths, STEMS)
    for stem in STEMS:
        assert "no data" in (tmp_path / f"{stem}.html").read_text()
    assert "no data: too few" in (tmp_path / "parameter_importance.html").read_text()


@pytest.mark.parametrize("max_points", [200, 10_000])
def test_an_offline_equity_page_keeps_the_deepest_drawdown(tmp_path: Path, max_points: int) -> None:
    frame = equity_frame(5000, datetime(2020, 1, 1), "BTC_USDT")
    deepest = float(frame["drawdown_pct"].max())  # type: ignore[arg-type]
    plot = equity_drawdown(frame, max_points=max_points)
    paths = write_plots([plot], tmp_path, include_plotlyjs=True)
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
