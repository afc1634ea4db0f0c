"""MLflow tracking against a real local store (SQLite + artifact folder): two cycles of a level
read back and compared through the MLflow client, the cycle report on the cycle's parent run, and
the model registry of promoted parameters with its per-regime alias and rollback. What the UI
shows (experiment kind, nesting, datasets, step metrics) is in test_mlflow_ui.py."""

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from ffe_dagster.core.reporting.plots import StudyPlotData
from ffe_dagster.core.study.convergence import best_feasible_so_far
from ffe_dagster.core.study.level_records import trials_table
from ffe_dagster.core.study.level_result import LevelResult
from ffe_dagster.core.study.optimize import StudyOutcome, TrialRecord
from ffe_dagster.promotion.cycle_report import publish_cycle_report
from ffe_dagster.resources.provenance import code_version, git_commit
from ffe_dagster.resources.tracking import MlflowTrackingResource
from ffe_dagster.resources.tracking_cycles import CycleRef
from ffe_dagster.resources.tracking_registry import current_alias

PLOTS = (
    "optimization_history",
    "parameter_importance",
    "pareto_front",
    "equity_drawdown",
    "sensitivity_surface",
)


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowTrackingResource]:
    root = tmp_path_factory.mktemp("mlflow")
    yield MlflowTrackingResource(
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        artifact_dir=str(root / "artifacts"),
        experiment="ffe_test",
    )


@pytest.fixture(scope="module")
def client(tracking: MlflowTrackingResource) -> MlflowClient:
    return tracking.client()


def records(seed: int) -> tuple[TrialRecord, ...]:
    rng = np.random.default_rng(seed)
    return tuple(
        TrialRecord(
            number=i,
            params={"stop_loss_pct": float(rng.uniform(0.5, 5))},
            metrics={
                "sharpe": float(rng.normal()),
                "win_rate_pct": float(rng.uniform(30, 60)),
                "max_drawdown_pct": float(rng.uniform(1, 20)),
            },
            feasible=bool(i % 2),
        )
        for i in range(12)
    )


def study(seed: int) -> pl.DataFrame:
    return trials_table(StudyOutcome("s", records(seed), (1, 3), resumed_trials=0, new_trials=12))


def equity() -> pl.DataFrame:
    values = 10_000 * np.cumprod(np.full(48, 1.001))
    return pl.DataFrame(
        {
            "instrument": ["BTC_USDT"] * 48,
            "ts": [datetime(2021, 1, 1) + timedelta(hours=h) for h in range(48)],
            "equity": values,
            "drawdown_pct": np.zeros(48),
        }
    )


def log_cycle(tracking: MlflowTrackingResource, cycle: int, sharpe: float, win_rate: float) -> str:
    trials = study(cycle)
    return tracking.log_study(
        run_name=f"level_1_long_uptrends cycle{cycle}",
        tags={
            "level": "1",
            "direction": "long",
            "instruments": "BTC_USDT,ETH_USDT",
            "dagster_run_id": f"dagster-run-{cycle}",
        },
        params={"n_trials": 12, "best_stop_loss_pct": 1.5 + cycle},
        metrics={"test_sharpe": sharpe, "test_win_rate_pct": win_rate},
        trials=trials,
        json_artifacts={"best_params.json": {"stop_loss_pct": 1.5 + cycle}},
        tables={"chosen_equity": equity()},
        plots=StudyPlotData(trials=trials, importance={"stop_loss_pct": 1.0}, equity=equity()),
        data_range="2020-01-01T00:00:00 .. 2021-11-30T23:00:00",
        partition="unpartitioned",
        data_fingerprint=f"fp{cycle}",
        cycle=CycleRef(f"cycle-{cycle}", "schedule", f"dagster-run-{cycle}"),
        convergence=best_feasible_so_far(records(cycle)),
    )


@pytest.fixture(scope="module")
def cycles(tracking: MlflowTrackingResource, client: MlflowClient) -> list[Run]:
    first = log_cycle(tracking, 1, sharpe=0.9, win_rate=48.0)
    second = log_cycle(tracking, 2, sharpe=1.3, win_rate=55.0)
    experiment = client.get_experiment_by_name("ffe_test")
    assert experiment is not None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.`ffe.kind` = 'level_study' and tags.level = '1'",
        order_by=["start_time ASC"],
    )
    assert [r.info.run_id for r in runs] == [first, second]
    return list(runs)


def test_two_cycles_compare_side_by_side(cycles: list[Run]) -> None:
    first, second = cycles
    assert first.info.status == second.info.status == "FINISHED"
    assert second.data.metrics["test_sharpe"] - first.data.metrics["test_sharpe"] == (
        pytest.approx(0.4)
    )
    assert second.data.metrics["test_win_rate_pct"] > first.data.metrics["test_win_rate_pct"]
    assert (first.data.params["best_stop_loss_pct"], second.data.params["best_stop_loss_pct"]) == (
        "2.5",
        "3.5",
    )
    for run, cycle in ((first, 1), (second, 2)):
        tags = run.data.tags
        assert tags["level"] == "1" and tags["direction"] == "long"
        assert tags["instruments"] == "BTC_USDT,ETH_USDT"
        assert tags["dagster_run_id"] == f"dagster-run-{cycle}"
        assert tags["data_range"] == "2020-01-01T00:00:00 .. 2021-11-30T23:00:00"
        assert tags["partition"] == "unpartitioned"
        assert tags["data_fingerprint"] == f"fp{cycle}"
        assert tags["code_version"] == code_version(git_commit())
        assert tags["ffe.kind"] == "level_study"
        assert tags["mlflow.runName"] == f"level_1_long_uptrends cycle{cycle}"
        assert (tags["cycle_id"], tags["trigger"]) == (f"cycle-{cycle}", "schedule")


def test_artifacts_hold_tables_and_plots(cycles: list[Run], client: MlflowClient) -> None:
    run_id = cycles[1].info.run_id
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"trials.csv", "trials.parquet", "chosen_equity.csv", "best_params.json"} <= top
    plots = {a.path: a.file_size for a in client.list_artifacts(run_id, "plots")}
    assert set(plots) == {f"plots/{s}.{ext}" for s in PLOTS for ext in ("png", "html")} | {
        "plots/sensitivity_surface.json"  # the surface's numbers beside its figures
    }
    assert all((size or 0) > 1000 for size in plots.values())
    local = client.download_artifacts(run_id, "trials.csv")
    assert pl.read_csv(local).height == 12


def test_code_version_never_fails_without_git() -> None:
    assert code_version(None) == code_version() != ""
    assert code_version("0123456789abcdef").endswith("+g0123456789ab")


def test_cycle_report_on_the_parent_run(
    tracking: MlflowTrackingResource, client: MlflowClient, cycles: list[Run]
) -> None:
    level = {
        "level": 1,
        "name": "Long-only on uptrends",
        "direction": "long",
        "passed": True,
        "mlflow_run_id": cycles[1].info.run_id,
        "chosen": {"number": 1, "params": {"stop_loss_pct": 3.5}, "validation": {"sharpe": 1.2}},
        "test": {"sharpe": 1.3, "win_rate_pct": 55.0, "max_drawdown_pct": 4.0},
        "criteria": [{"name": "min_sharpe", "threshold": 0.8, "value": 1.3, "passed": True}],
    }
    summary = {"BULL": {"promoted": True, "version": 1, "level": 1, "reason": "COLD passed"}}
    decisions = "| regime | stage | decision |\n|---|---|---|\n| BULL | COLD | pass |"
    # The promotion runs in another Dagster run of the same cycle than the level did.
    step = CycleRef("cycle-2", "schedule", "dagster-run-2b")
    metadata = publish_cycle_report(
        tracking, [LevelResult.from_row(level)], summary, step, decisions=decisions
    )
    report = str(metadata["curriculum_report"].value)
    recommendation = str(metadata["deployment_recommendation"].value)
    assert report.startswith("# Curriculum report")
    assert recommendation.startswith("Deploy: BULL v1.")
    run = client.get_run(str(metadata["report_mlflow_run_id"].value))
    # The report lives on the cycle's parent, the very run the level is nested under.
    assert run.info.run_id == cycles[1].data.tags["mlflow.parentRunId"]
    assert run.info.experiment_id == cycles[1].info.experiment_id
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert (tags["ffe.kind"], tags["cycle_id"], tags["trigger"]) == ("cycle", "cycle-2", "schedule")
    assert tags["dagster_run_ids"] == "dagster-run-2,dagster-run-2b"
    assert tags["report_dagster_run_id"] == "dagster-run-2b"
    assert tags["level_run_ids"] == cycles[1].info.run_id
    assert tags["mlflow.note.content"] == recommendation
    assert run.data.metrics["deploy_bull"] == 1.0
    assert run.data.metrics["level_1_test_sharpe"] == 1.3
    for name, text in (
        ("curriculum_report.md", report),
        ("deployment_recommendation.md", recommendation),
        ("promotion_decisions.md", decisions),
    ):
        assert Path(client.download_artifacts(run.info.run_id, name)).read_text() == text
    # No second experiment: the curriculum experiment holds cycles, levels and reports.
    assert client.get_experiment_by_name("ffe_test_reports") is None


def test_registry_alias_moves_and_rolls_back(
    tracking: MlflowTrackingResource, client: MlflowClient
) -> None:
    assert tracking.current_model_version("BULL") is None
    first = tracking.register_promotion(
        regime="BULL",
        params={"stop_loss_pct": 2.0, "stop_mode": "fixed"},
        metrics={"sharpe": 1.1},
        source_run_id="run-a",
        description="cycle 1",
        registry_version=1,
        level=1,
    )
    second = tracking.register_promotion(
        regime="BULL",
        params={"stop_loss_pct": 3.0, "stop_mode": "trailing"},
        metrics={"sharpe": 1.4},
        source_run_id="run-b",
        description="cycle 2",
        registry_version=2,
    )
    assert (first, second) == (1, 2)
    name = tracking.registered_model
    assert int(client.get_model_version_by_alias(name, "bull-current").version) == 2
    assert tracking.current_model_version("BULL") == 2

    tracking.set_current(regime="BULL", model_version=1)  # rollback
    version = client.get_model_version_by_alias(name, current_alias("BULL"))
    assert int(version.version) == 1
    assert version.tags == {
        "regime": "BULL",
        "registry_version": "1",
        "level": "1",
        "source_run_id": "run-a",
    }
    assert version.description == "cycle 1"
    local = client.download_artifacts(str(version.run_id), "parameters/params.json")
    assert json.loads(Path(local).read_text()) == {"stop_loss_pct": 2.0, "stop_mode": "fixed"}
    assert tracking.promoted_params("BULL") == {"stop_loss_pct": 2.0, "stop_mode": "fixed"}
    assert tracking.promoted_params("BULL", 2)["stop_mode"] == "trailing"


def test_regimes_have_separate_aliases(
    tracking: MlflowTrackingResource, client: MlflowClient
) -> None:
    bull = tracking.current_model_version("BULL")
    bear = tracking.register_promotion(
        regime="BEAR",
        params={"stop_loss_pct": 1.0},
        metrics={"sharpe": 0.7, "window": "7 days"},
        source_run_id=None,
        description="bear",
    )
    assert tracking.current_model_version("BEAR") == bear
    run = client.get_run(str(client.get_model_version(tracking.registered_model, str(bear)).run_id))
    assert run.data.metrics == {"sharpe": 0.7}  # the label stays in metrics.json only
    assert tracking.current_model_version("SIDEWAYS") is None
    with pytest.raises(ValueError, match="belongs to regime 'BEAR'"):
        tracking.set_current(regime="BULL", model_version=bear)
    tracking.clear_current(regime="BEAR")  # a suspension: no current set any more
    assert tracking.current_model_version("BEAR") is None
    tracking.clear_current(regime="BEAR")  # idempotent
    assert tracking.current_model_version("BULL") == bull  # other regimes keep their alias


def test_a_promoted_set_run_sits_in_the_cycle_of_its_study(
    tracking: MlflowTrackingResource, client: MlflowClient, cycles: list[Run]
) -> None:
    version = tracking.register_promotion(
        regime="DEFAULT",
        params={"stop_loss_pct": 2.5},
        metrics={"sharpe": 0.9},
        source_run_id=cycles[0].info.run_id,
        description="from cycle 1",
    )
    mv = client.get_model_version(tracking.registered_model, str(version))
    run = client.get_run(str(mv.run_id))
    assert run.info.experiment_id == cycles[0].info.experiment_id
    assert run.data.tags["ffe.kind"] == "promoted_parameters"
    assert run.data.tags["mlflow.parentRunId"] == cycles[0].data.tags["mlflow.parentRunId"]
