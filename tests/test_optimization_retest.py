"""New bars that reach only the test era and the hold-out (the 6-hour cycle's): the level asset
keeps its study side and computes only its test side again, logged as an MLflow run that points
at the run holding the plots and tables. Real DuckDB warehouse, Optuna journal, MLflow store and
Dagster materializations, on the bundled BTC/USDT hourly bars (the fixture of
``tests/test_study_workers.py``); level 3, whose test period is the whole test era up to the
hold-out, so the new bars reach it."""

from datetime import UTC, datetime

import polars as pl
from mlflow.tracking import MlflowClient

from ffe_dagster.config.settings import PACKAGE_DIR, Settings
from ffe_dagster.resources.tracking_retest import STUDY_SIDE_FROM_TAG
from ffe_dagster.resources.warehouse import WarehouseResource
from tests.test_optimization_reuse import materialize_level
from tests.test_study_workers import TRIALS, settings  # noqa: F401  (the fixture)

LEVEL = 3


def _bars(warehouse: WarehouseResource, bars: pl.DataFrame) -> None:
    warehouse.replace_window(
        "validated_bars",
        "BTC_USDT",
        datetime(2000, 1, 1, tzinfo=UTC),
        datetime(2100, 1, 1, tzinfo=UTC),
        bars,
    )


def _digests(client: MlflowClient, run_id: str) -> dict[str, str]:
    run = client.get_run(run_id)
    assert run.inputs is not None
    return {
        next(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset.digest
        for d in run.inputs.dataset_inputs
    }


def _fields(client: MlflowClient, run_id: str) -> tuple[dict[str, str], dict[str, str], set[str]]:
    # A run's tags (without the non-finite metrics' ``metric.<name>``), params, and the names of
    # its final metrics wherever they went (a metric, or a tag when not finite); the step
    # metrics of the trials are the study side's, not part of the level's fields.
    data = client.get_run(run_id).data
    tags = {k: v for k, v in data.tags.items() if not k.startswith("metric.")}
    metrics = {k for k in data.metrics if not k.startswith("convergence/")}
    metrics |= {k.removeprefix("metric.") for k in data.tags if k.startswith("metric.")}
    return tags, dict(data.params), metrics


def test_new_bars_in_the_test_era_recompute_only_the_test_side(
    settings: Settings,  # noqa: F811
) -> None:
    warehouse = WarehouseResource(path=str(settings.warehouse_path))
    bars = pl.read_parquet(PACKAGE_DIR / "data" / "samples" / "BTC_USDT_1h.parquet").select(
        "ts", "open", "high", "low", "close", "volume"
    )
    last = bars["ts"].max()
    assert isinstance(last, datetime)
    _bars(warehouse, bars.filter(pl.col("ts") <= last - pl.duration(hours=6)))
    first = materialize_level(settings, LEVEL)
    assert (first["reused"], first["new_trials"]) == (False, TRIALS)
    stored = warehouse.latest_level_result(LEVEL)
    assert stored is not None and stored.study_key and stored.reuse_key

    _bars(warehouse, bars)  # the 6 hours arrive
    second = materialize_level(settings, LEVEL)
    assert (second["reused"], second["new_trials"], second["trials"]) == (False, 0, TRIALS)
    retested = warehouse.latest_level_result(LEVEL)
    assert retested is not None
    assert retested.study_key == stored.study_key and retested.reuse_key != stored.reuse_key
    assert retested.study_name == stored.study_name
    assert retested.study_side_from_run == first["mlflow_run_id"]
    for side in ("chosen", "candidates", "progression", "tries"):
        assert getattr(retested, side) == getattr(stored, side)
    for kept in ("lookahead", "vectorbt_check", "importance", "stability"):
        assert retested.analysis[kept] == stored.analysis[kept]

    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    run = client.get_run(second["mlflow_run_id"])
    assert run.data.tags[STUDY_SIDE_FROM_TAG] == first["mlflow_run_id"]
    assert run.data.tags["study_name"] == stored.study_name
    assert run.data.metrics["test_sharpe"] == retested.test["sharpe"]
    # The same fields as the run in full: every tag, param and metric name, plus the pointer to
    # the study side; the tags and params that describe the study keep their values.
    full_tags, full_params, full_metrics = _fields(client, first["mlflow_run_id"])
    tags, params, metrics = _fields(client, run.info.run_id)
    assert set(tags) == set(full_tags) | {STUDY_SIDE_FROM_TAG}
    assert params == full_params and metrics == full_metrics
    assert "test_sharpe" in metrics and "n_trials" in params
    assert any(k.startswith("best_") for k in params) == (retested.chosen is not None)
    for same in (
        "ffe.kind",
        "level",
        "direction",
        "instruments",
        "study_name",
        "trial_profile",
        "partition",
        "data_fingerprint",
        "code_version",
    ):
        assert tags[same] == full_tags[same], same
    assert tags["dagster_run_id"] != full_tags["dagster_run_id"]
    # The level's own description, not the plots or tables (they stay in the first run).
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        "best_params.json",
        "level_result.json",
    }
    assert "plots" in {a.path for a in client.list_artifacts(first["mlflow_run_id"])}
    # The train and validation bars are the same; the test era's grew by the new bars.
    before, after = _digests(client, first["mlflow_run_id"]), _digests(client, run.info.run_id)
    assert after["train"] == before["train"] and after["validation"] == before["validation"]
    assert after["test"] != before["test"]

    third = materialize_level(
        settings, LEVEL
    )  # nothing new: the retested result is reused as a whole
    assert third["reused"] is True
    assert client.get_run(third["mlflow_run_id"]).data.tags["reused_from"] == run.info.run_id
