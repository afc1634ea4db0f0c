"""A level whose inputs and study did not change reuses its stored result: no trial, no
recomputation, no second MLflow run; any change (here: a trial added to its study) runs it again.
Real DuckDB warehouse, Optuna journal, MLflow store and Dagster materializations, on the bundled
BTC/USDT hourly bars (the fixture of ``tests/test_study_workers.py``)."""

import optuna
from dagster import materialize
from mlflow.tracking import MlflowClient

from ffe_dagster.assets.curriculum import build_level_asset
from ffe_dagster.config import load_curriculum, load_universe
from ffe_dagster.config.settings import Settings
from ffe_dagster.resources.studies import OptunaStorageResource
from ffe_dagster.resources.tracking import MlflowTrackingResource
from ffe_dagster.resources.warehouse import WarehouseResource
from tests.test_study_workers import LEVEL, TRIALS, settings  # noqa: F401  (the fixture)


def materialize_level(settings: Settings, level: int = LEVEL) -> dict:  # noqa: F811
    """Materialize one level asset on ``settings``' stores; its materialization metadata."""
    curriculum = load_curriculum(settings.curriculum_path)
    asset = build_level_asset(
        curriculum.levels[level - 1],
        None,
        curriculum,
        load_universe(settings.universe_path),
        "quick",
    )
    result = materialize(
        [asset],
        resources={
            "warehouse": WarehouseResource(path=str(settings.warehouse_path)),
            "optuna_storage": OptunaStorageResource(url=settings.studies_url),
            "mlflow_tracking": MlflowTrackingResource(
                tracking_uri=settings.mlflow_tracking_uri,
                artifact_dir=str(settings.mlflow_artifact_dir),
                experiment=settings.mlflow_experiment,
            ),
        },
    )
    assert result.success
    (event,) = result.asset_materializations_for_node(asset.key.path[-1])
    return {k: getattr(v, "value", v) for k, v in event.metadata.items()}


def _runs(settings: Settings) -> int:  # noqa: F811
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    assert experiment is not None
    # The level's runs (a cycle's parent run is logged beside them).
    return len(client.search_runs([experiment.experiment_id], f"tags.level = '{LEVEL}'"))


def test_an_unchanged_level_reuses_its_result_and_a_changed_study_runs_it_again(
    settings: Settings,  # noqa: F811
) -> None:
    warehouse = WarehouseResource(path=str(settings.warehouse_path))
    first = materialize_level(settings)
    assert (first["reused"], first["trials"]) == (False, TRIALS)
    assert first["new_trials"] == TRIALS
    stored = warehouse.latest_level_result(LEVEL)
    assert stored is not None and stored.reuse_key
    assert _runs(settings) == 1

    second = materialize_level(settings)
    assert (second["reused"], second["new_trials"], second["trials"]) == (True, 0, TRIALS)
    # The cycle's MLflow parent lists the level through a reference run: the first run's
    # params, metrics and datasets, tagged with its id, without its artifacts (not re-uploaded).
    assert second["mlflow_run_id"] != first["mlflow_run_id"]
    assert _runs(settings) == 2
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    source = client.get_run(first["mlflow_run_id"])
    reference = client.get_run(second["mlflow_run_id"])
    assert reference.data.tags["reused_from"] == source.info.run_id
    finals = {k: v for k, v in source.data.metrics.items() if not k.startswith("convergence/")}
    assert reference.data.metrics == finals and finals  # the step series stay with the source
    assert reference.data.params == source.data.params
    assert reference.inputs is not None and source.inputs is not None
    assert len(reference.inputs.dataset_inputs) == len(source.inputs.dataset_inputs)
    assert client.list_artifacts(reference.info.run_id) == []
    assert client.list_artifacts(source.info.run_id) != []
    again = warehouse.latest_level_result(LEVEL)
    assert again is not None and again.reused is True
    for key in ("chosen", "candidates", "test", "criteria", "progression", "analysis"):
        assert getattr(again, key) == getattr(stored, key)
    assert again.study_name == stored.study_name

    # One more trial in the study (as a study worker adds them): the result is stale.
    storage = OptunaStorageResource(url=settings.studies_url).storage("any")
    study = optuna.load_study(study_name=stored.study_name, storage=storage)
    last = study.trials[-1]
    study.add_trial(
        optuna.trial.create_trial(
            params=last.params,
            distributions=last.distributions,
            values=last.values,
            user_attrs=last.user_attrs,
            system_attrs=last.system_attrs,  # its constraint values
        )
    )
    third = materialize_level(settings)
    assert (third["reused"], third["trials"], third["new_trials"]) == (False, TRIALS + 1, 0)
    assert third["mlflow_run_id"] not in {first["mlflow_run_id"], second["mlflow_run_id"]}
    assert _runs(settings) == 3
    assert "reused_from" not in client.get_run(third["mlflow_run_id"]).data.tags


def test_a_result_whose_mlflow_run_failed_is_not_reused(settings: Settings) -> None:  # noqa: F811
    materialize_level(settings)
    stored = WarehouseResource(path=str(settings.warehouse_path)).latest_level_result(LEVEL)
    assert stored is not None and stored.mlflow_run_id
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    source = stored.reused_from_run or stored.mlflow_run_id
    # As the tracking worker leaves a run whose deferred logging raised.
    client.set_terminated(source, status="FAILED")
    again = materialize_level(settings)
    assert (again["reused"], again["new_trials"]) == (False, 0)  # the study resumed, complete
    assert client.get_run(again["mlflow_run_id"]).info.status == "FINISHED"
    assert "reused_from" not in client.get_run(again["mlflow_run_id"]).data.tags
