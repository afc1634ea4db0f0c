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
from ffe_dagster.config.settings import PACKAGE_DIR, Settings
from ffe_dagster.core.promotion.records import RegimeAction, Trigger, VersionStatus
from ffe_dagster.definitions import build_definitions
from ffe_dagster.resources.registry import ParameterRegistryResource
from ffe_dagster.resources.warehouse import WarehouseResource

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

    _check_mlflow_cycles(tiny_settings, report, second.run_id)

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
    assert all(v.reason for v in history)
    promoted = {k for k, v in exported["regimes"].items() if v is not None}
    assert promoted == {v.regime for v in history if v.status is VersionStatus.CURRENT}
    # A regime whose level did not pass has no version: each cycle blocked it, naming the level.
    levels = {spec.level: spec for spec in load_curriculum(tiny_settings.curriculum_path).levels}
    for level, info in report["levels"].items():
        for regime in levels[level].promotes:
            noted = registry.regime_decisions(regime)
            if info["passed"]:
                assert {v.regime for v in history} >= {regime}
                continue
            assert not [v for v in history if v.regime == regime]
            assert [d.action for d in noted] == [RegimeAction.BLOCKED, RegimeAction.BLOCKED]
            assert all(d.reason.startswith(f"level {level} did not pass") for d in noted)
            blocked = [c for c in exported["changes"] if c["regime"] == regime]
            assert [c["action"] for c in blocked] == ["blocked"]
    # The second cycle decided something for every regime, with its reason, trigger and run id.
    trail = [
        t
        for t in [*registry.transitions(), *registry.regime_decisions()]
        if t.run_id == second.run_id
    ]
    assert {t.regime for t in trail} == {"BULL", "BEAR", "SIDEWAYS", "DEFAULT"}
    assert all(t.reason and t.trigger is Trigger.SCHEDULE for t in trail)


def _check_mlflow_cycles(settings: Settings, report: dict, second_run_id: str) -> None:
    # What a user comparing the two cycles in MLflow sees: parents, nested levels, datasets.
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    assert experiment is not None
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    everything = client.search_runs([experiment.experiment_id])
    all_runs = [r for r in everything if r.data.tags.get("ffe.kind") == "level_study"]
    parents = {r.info.run_id: r for r in everything if r.data.tags.get("ffe.kind") == "cycle"}
    # One parent per cycle, finished by its report, with that cycle's four levels nested under it.
    assert sorted(p.data.tags["trigger"] for p in parents.values()) == ["manual", "schedule"]
    assert all(p.info.status == "FINISHED" for p in parents.values())
    for parent_id, parent in parents.items():
        nested = [r for r in all_runs if r.data.tags["mlflow.parentRunId"] == parent_id]
        assert sorted(r.data.tags["level"] for r in nested) == ["1", "2", "3", "4"]
        assert {r.data.tags["cycle_id"] for r in nested} == {parent.data.tags["cycle_id"]}
    assert {p.data.tags["cycle_id"] for p in parents.values()} == {
        "cycle-2",
        report["runs"]["optimization_job"],
    }
    digests: dict[str, set[tuple[tuple[str, str], ...]]] = {}
    for run in all_runs:
        assert run.inputs is not None
        contexts = {
            {t.key: t.value for t in i.tags}["mlflow.data.context"]: i.dataset.digest
            for i in run.inputs.dataset_inputs
        }
        assert set(contexts) == {"train", "validation", "test"}
        digests.setdefault(run.data.tags["level"], set()).add(tuple(sorted(contexts.items())))
        # Trials per second by trial number, for the trials this run ran; cycle 2 resumed every
        # study with its trials done, so it spent no time on trials and logs no rate.
        rates = client.get_metric_history(run.info.run_id, "convergence/trials_per_second")
        resumed = run.data.tags["dagster_run_id"] == second_run_id
        assert (not rates) if resumed else (rates and all(m.value > 0 for m in rates))
    assert all(len(d) == 1 for d in digests.values())  # the same bars in both cycles
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
    runs = [r for r in all_runs if r.data.tags["dagster_run_id"] != second_run_id]
    # Comparing the cycles in MLflow: the bars did not change, so each level's study resumed
    # under the same name with all its trials done, and chose the same parameters.
    for first_run in runs:
        (again,) = [
            r
            for r in all_runs
            if r.data.tags["dagster_run_id"] == second_run_id
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
