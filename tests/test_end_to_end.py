"""The whole graph materialized into a temporary Dagster instance, warehouse, MLflow store and
Optuna storage, with tiny trial counts, as ``make run`` does."""

import json
from pathlib import Path

import polars as pl
import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance
from mlflow.tracking import MlflowClient

from ffe_dagster.cli import run_cycle
from ffe_dagster.config import load_curriculum
from ffe_dagster.definitions import build_definitions
from ffe_dagster.resources.registry import ParameterRegistryResource
from ffe_dagster.resources.warehouse import WarehouseResource
from ffe_dagster.settings import PACKAGE_DIR, Settings

SAMPLE_ROWS = {"BTC_USDT": 39_400, "ETH_USDT": 39_400, "EUR_USD": 27_777}  # see samples README


def test_raw_bars_partition_writes_are_idempotent(tiny_settings: Settings) -> None:
    """One month x instrument partition (the default grain), materialized twice."""
    job = build_definitions(tiny_settings).resolve_job_def("ingest_job")
    for _ in range(2):
        result = job.execute_in_process(partition_key="2024-01-01|BTC_USDT")
        assert result.success
    sample = pl.read_parquet(PACKAGE_DIR / "data" / "samples" / "BTC_USDT_1h.parquet")
    january = sample.filter(pl.col("ts").dt.strftime("%Y-%m") == "2024-01")
    warehouse = WarehouseResource(path=str(tiny_settings.warehouse_path))
    assert january.height > 700  # the sample is hourly and nearly complete
    assert warehouse.count("raw_bars", "BTC_USDT") == january.height


@pytest.mark.slow
def test_two_cycles_end_to_end(tiny_settings: Settings, tmp_path: Path) -> None:
    """Cycle 1 is ``make run``'s full cycle; cycle 2 re-runs the curriculum and promotion as
    the cycle chain launches them after a scheduled ingest, on the same bars."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with DagsterInstance.local_temp(tempdir=str(home)) as instance:
        report = run_cycle(tiny_settings, instance)
        second = (
            build_definitions(tiny_settings)
            .resolve_job_def("optimization_job")
            .execute_in_process(
                instance=instance, tags={"ffe/trigger": "schedule", "ffe/cycle": "cycle-2"}
            )
        )
        assert second.success
        for key in ("gx_suite_passes", "quarantine_rate_within_limit"):
            check = AssetCheckKey(AssetKey("validated_bars"), key)
            record = instance.event_log_storage.get_latest_asset_check_execution_by_key([check])[
                check
            ]
            assert record is not None and record.status.value == "SUCCEEDED", key
        assert instance.get_latest_materialization_event(AssetKey("promoted_parameters"))

    warehouse = WarehouseResource(path=str(tiny_settings.warehouse_path))
    for instrument, rows in SAMPLE_ROWS.items():
        assert warehouse.count("raw_bars", instrument) == rows
        kept = warehouse.count("validated_bars", instrument)
        quarantined = warehouse.read_table(
            "SELECT count(DISTINCT ts) AS n FROM bars_quarantine WHERE instrument = ?", [instrument]
        )["n"][0]
        assert kept + quarantined == rows  # nothing silently dropped
        assert warehouse.count("market_regimes", instrument) > 0.9 * kept

    client = MlflowClient(tracking_uri=tiny_settings.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name(tiny_settings.mlflow_experiment)
    assert experiment is not None
    all_runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["level"] for r in all_runs) == [
        "1",
        "1",
        "2",
        "2",
        "3",
        "3",
        "4",
        "4",
    ]
    runs = [r for r in all_runs if r.data.tags["dagster_run_id"] != second.run_id]
    # Comparing the cycles in MLflow: the bars did not change, so each level's study resumed
    # under the same name with all its trials done, and chose the same parameters.
    for first_run in runs:
        (again,) = [
            r
            for r in all_runs
            if r.data.tags["dagster_run_id"] == second.run_id
            and r.data.tags["level"] == first_run.data.tags["level"]
        ]
        assert again.data.tags["study_name"] == first_run.data.tags["study_name"]
        best = {k: v for k, v in first_run.data.params.items() if k.startswith("best_")}
        assert best == {k: v for k, v in again.data.params.items() if k.startswith("best_")}
    for run in runs:
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"trials.csv", "best_params.json", "level_result.json"} <= artifacts
        assert run.data.params["n_trials"] in {"4", "5", "6"}
        assert "test_sharpe" in run.data.metrics
    assert {info["mlflow_run_id"] for info in report["levels"].values()} == {
        r.info.run_id for r in runs
    }

    exported = json.loads(Path(report["export"]).read_text())
    assert exported["schema"] == "ffe_dagster.promoted_parameters/1"
    assert set(exported["regimes"]) == {"BULL", "BEAR", "SIDEWAYS", "DEFAULT"}
    assert exported["dagster_run_id"] == second.run_id
    ranges = {p.name: p for p in load_curriculum(tiny_settings.curriculum_path).parameters}
    for current in exported["regimes"].values():
        if current is None:
            continue
        for name, value in current["params"].items():
            spec = ranges[name]
            assert (value in spec.choices) if spec.choices else spec.low <= value <= spec.high

    registry = ParameterRegistryResource(url=tiny_settings.registry_url)
    history = registry.history()
    assert {v["regime"] for v in history} == {"BULL", "BEAR", "SIDEWAYS", "DEFAULT"}
    assert all(v["reason"] for v in history)
    promoted = {k for k, v in exported["regimes"].items() if v is not None}
    assert promoted == {v["regime"] for v in history if v["status"] == "current"}
    # The second cycle decided something for every regime, with its reason, trigger and run id.
    trail = [t for t in registry.transitions() if t["run_id"] == second.run_id]
    assert {t["regime"] for t in trail} == {"BULL", "BEAR", "SIDEWAYS", "DEFAULT"}
    assert all(t["reason"] and t["trigger"] == "schedule" for t in trail)
