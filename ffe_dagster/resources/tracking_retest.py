"""A retested level in this cycle's MLflow parent: its new test side, pointing at its study side.

A level whose study side is unchanged while new bars lengthened its test era keeps the study side
and computes the test side again (``core/study/levels.retest_level``). The new cycle logs the
level as a finished run with everything that describes this result: tags, params, the
validation and the new test metrics, ``level_result.json``, ``best_params.json`` and the bars of
each period as dataset inputs (the test era's as they are now). What the study side produced and
did not change (the plots, the trials table, the chosen set's trades and equity, the convergence
step metrics) stays in the run that computed it, named by the tag ``study_side_from``; nothing
is drawn or uploaded twice.
"""

from collections.abc import Sequence

from mlflow.tracking import MlflowClient

from ffe_dagster.core.study.datasets import StudyDataset
from ffe_dagster.resources.tracking import MlflowTrackingResource
from ffe_dagster.resources.tracking_cycles import CycleRef, DatasetSource, log_datasets
from ffe_dagster.resources.tracking_fields import RunFields
from ffe_dagster.resources.tracking_runs import (
    finish_run,
    level_study_tags,
    started_run,
    write_json_artifacts,
)

STUDY_SIDE_FROM_TAG = "study_side_from"


def log_retested_study(
    tracking: MlflowTrackingResource,
    *,
    study_side_run_id: str,
    fields: RunFields,
    cycle: CycleRef,
    code_version: str,
    datasets: Sequence[StudyDataset],
    dataset_source: DatasetSource,
) -> str:
    """Log a retested level's run under ``cycle``'s parent; returns its run id.

    ``study_side_run_id`` is the run holding the level's study side in full (its plots and
    tables), tagged ``study_side_from``; ``fields`` are the level's as a full run logs them
    (``assets/level_run.py``); ``datasets`` (read from ``dataset_source``) its periods' bars.
    """
    client: MlflowClient = tracking.client()
    experiment_id = tracking.experiment_id(client)
    all_tags = {
        **level_study_tags(client, experiment_id, code_version=code_version, cycle=cycle),
        **fields.tags,
        STUDY_SIDE_FROM_TAG: study_side_run_id,
    }
    run_id = started_run(client, experiment_id, run_name=fields.run_name, tags=all_tags)
    finish_run(
        client,
        run_id,
        run_name=fields.run_name,
        params=fields.params,
        metrics=fields.metrics,
        artifacts=lambda folder: write_json_artifacts(folder, fields.json_artifacts),
        more=lambda run: log_datasets(client, run, datasets, dataset_source),
    )
    return run_id
