"""A study's plots written as files (``resources/tracking_plots.write_plots``): a non-empty PNG
and a plotly HTML page per plot, plotly.js from its CDN by default or embedded on request."""

import base64
import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import optuna
import polars as pl
import pytest
from dagster import materialize

from ffe_dagster.assets.curriculum import build_curriculum_assets
from ffe_dagster.assets.loading import load_level_data
from ffe_dagster.config import load_curriculum, load_universe
from ffe_dagster.config.settings import PACKAGE_DIR
from ffe_dagster.core.regimes.detection import RegimeConfig, detect_regimes
from ffe_dagster.core.reporting.plots import StudyPlotData, equity_drawdown, study_plots
from ffe_dagster.core.study.evaluation import Period
from ffe_dagster.core.study.level_records import trials_table
from ffe_dagster.core.study.levels import level_evaluator
from ffe_dagster.core.study.optimize import StudyOutcome
from ffe_dagster.core.study.selection import neighbourhood
from ffe_dagster.resources.optuna_storage import open_storage
from ffe_dagster.resources.studies import OptunaStorageResource
from ffe_dagster.resources.tracking import MlflowTrackingResource
from ffe_dagster.resources.tracking_plots import write_plots
from ffe_dagster.resources.warehouse import WarehouseResource
from ffe_dagster.sources.files import FileSource
from tests.core.test_plots import STEMS, equity_frame, study_trials

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
UNIVERSE = load_universe(PACKAGE_DIR / "config" / "universe.yaml")


def assert_written(
    paths: list[Path], stems: tuple[str, ...], with_data: tuple[str, ...] = ()
) -> None:
    assert sorted(p.name for p in paths) == sorted(
        [
            *(f"{s}.{ext}" for s in stems for ext in ("png", "html")),
            *(f"{s}.json" for s in with_data),
        ]
    )
    for path in paths:
        data = path.read_bytes()
        assert len(data) > 1000, path
        if path.suffix == ".png":
            assert data.startswith(PNG_MAGIC)
        elif path.suffix == ".json":
            assert json.loads(data)
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
    assert_written(paths, STEMS, with_data=("sensitivity_surface",))
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


def test_a_levels_sensitivity_surface_is_logged_with_numbers_from_its_study(
    tmp_path: Path,
) -> None:
    # Level 1 materialized for real (warehouse, Optuna journal, MLflow store) with plateau
    # selection; its run's surface numbers are checked against the study read back from Optuna
    # and the neighbourhood scored again on validation.
    curriculum = load_curriculum(PACKAGE_DIR / "config" / "curriculum.yaml")
    spec = replace(curriculum.levels[0], trials={"quick": 16, "full": 16})
    curriculum = replace(
        curriculum,
        levels=(spec,),
        selection="plateau",
        robustness=replace(curriculum.robustness, walk_forward_trials={"quick": 4, "full": 4}),
    )
    end = datetime(2022, 4, 1, tzinfo=UTC)
    files = FileSource(PACKAGE_DIR / "data" / "samples", UNIVERSE.files, interval="1h")
    warehouse = WarehouseResource(path=str(tmp_path / "warehouse.duckdb"))
    for key in UNIVERSE.files:
        bars = files.fetch(key, datetime(2020, 1, 1, tzinfo=UTC), end)
        warehouse.replace_window("validated_bars", key, datetime(2000, 1, 1, tzinfo=UTC), end, bars)
        warehouse.replace_regimes(key, detect_regimes(bars, RegimeConfig()))
    journal = f"journal:///{tmp_path / 'studies.journal'}"
    tracking = MlflowTrackingResource(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_dir=str(tmp_path / "artifacts"),
        experiment="ffe_curriculum",
    )
    result = materialize(
        build_curriculum_assets(curriculum, UNIVERSE, "quick"),
        resources={
            "warehouse": warehouse,
            "optuna_storage": OptunaStorageResource(url=journal),
            "mlflow_tracking": tracking,
        },
    )
    assert result.success
    stored = warehouse.latest_level_result(spec.level)
    assert stored is not None and stored.chosen is not None and stored.mlflow_run_id
    client = tracking.client()
    listed = {a.path for a in client.list_artifacts(stored.mlflow_run_id, "plots")}
    assert {f"plots/sensitivity_surface.{e}" for e in ("png", "html", "json")} <= listed
    local = Path(client.download_artifacts(stored.mlflow_run_id, "plots", str(tmp_path / "dl")))
    assert (local / "sensitivity_surface.png").read_bytes().startswith(PNG_MAGIC)
    surface = json.loads((local / "sensitivity_surface.json").read_text())

    # The axes: the two numeric parameters Optuna ranked most important.
    importance = stored.analysis["importance"]
    numeric = [p.name for p in curriculum.parameters if not p.choices]
    top = sorted((n for n in numeric if n in importance), key=lambda n: -importance[n])[:2]
    assert [surface["x"], surface["y"]] == top and surface["axes_by"] == "importance"
    # Every finished trial at its parameters with its train Sharpe, as Optuna stored them.
    study = optuna.load_study(study_name=stored.study_name, storage=open_storage(journal))
    finished = [t for t in study.trials if t.state is optuna.trial.TrialState.COMPLETE]
    expected = {
        t.number: (t.params[top[0]], t.params[top[1]], t.user_attrs["metrics"]["sharpe"])
        for t in finished
    }
    got = {p["number"]: (p["x"], p["y"], p["sharpe"]) for p in surface["trials"]}
    assert len(got) == len(finished) >= 16
    assert sorted(got) == sorted(expected)
    for number, values in expected.items():
        assert got[number] == pytest.approx(values), number
    chosen = stored.chosen
    assert surface["chosen"]["number"] == chosen.number
    assert surface["chosen"]["x"] == pytest.approx(float(chosen.params[top[0]]))
    assert surface["chosen"]["validation_sharpe"] == pytest.approx(chosen.validation_sharpe)
    # The plateau: each neighbour (one parameter moved by 5 % of its range) scored again on the
    # validation bars; the mean is over the chosen set and its neighbours.
    data = load_level_data(warehouse, UNIVERSE, curriculum.holdout_days)
    group = neighbourhood(chosen.params, curriculum.parameters, fraction=0.05)
    scored = level_evaluator(spec, curriculum, data).evaluate_many(group, Period.VALIDATION)
    plateau = surface["plateau"]
    assert plateau["fraction"] == 0.05 and len(plateau["neighbours"]) == len(group) > 0
    assert [n["sharpe"] for n in plateau["neighbours"]] == pytest.approx([m.sharpe for m in scored])
    assert [c for n in plateau["neighbours"] for c in (n["x"], n["y"])] == pytest.approx(
        [float(g[name]) for g in group for name in top]
    )
    values = [chosen.validation_sharpe, *(m.sharpe for m in scored)]
    assert plateau["mean_sharpe"] == pytest.approx(sum(values) / len(values))


def test_each_figure_is_drawn_once_for_its_png(tmp_path: Path) -> None:
    # Drawing is most of a level's plotting time: no second draw to crop (bbox_inches="tight")
    # or to lay out (a layout engine makes savefig draw once without rendering, then again).
    plots = study_plots(StudyPlotData(trials=study_trials(), importance={"stop_loss_pct": 1.0}))
    draws = {p.name: 0 for p in plots}
    for plot in plots:

        def count(_event: object, name: str = plot.name) -> None:
            draws[name] += 1

        plot.static.canvas.mpl_connect("draw_event", count)
    write_plots(plots, tmp_path)
    assert draws == {p.name: 1 for p in plots}
