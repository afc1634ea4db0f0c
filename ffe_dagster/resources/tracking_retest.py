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

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from ffe_dagster.core.study.datasets import StudyDataset
from ffe_dagster.resources.provenance import git_commit
from ffe_dagster.resources.tracking import MlflowTrackingResource, ensure_writable_folder
from ffe_dagster.resources.tracking_cycles import (
    CycleRef,
    DatasetSource,
    cycle_parent,
    dataset_inputs,
    parent_tag,
)

STUDY_SIDE_FROM_TAG = "study_side_from"
_MAX_PARAM_LEN = 6000  # MLflow's limits (mlflow.utils.validation), as in ``tracking``
_MAX_TAG_LEN = 8000


def log_retested_study(
    tracking: MlflowTrackingResource,
    *,
    study_side_run_id: str,
    run_name: str,
    tags: Mapping[str, str],
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    json_artifacts: Mapping[str, Any],
    cycle: CycleRef,
    code_version: str,
    datasets: Sequence[StudyDataset],
    dataset_source: DatasetSource,
) -> str:
    """Log a retested level's run under ``cycle``'s parent; returns its run id.

    ``study_side_run_id`` is the run holding the level's study side in full (its plots and
    tables), tagged ``study_side_from``; ``tags``, ``params`` and ``metrics`` are the level's as a
    full run would log them; ``datasets`` (read from ``dataset_source``) its periods' bars.
    """
    client: MlflowClient = tracking.client()
    experiment_id = tracking.experiment_id(client)
    parent = cycle_parent(client, experiment_id, cycle)
    commit = git_commit()
    all_tags = {
        "ffe.kind": "level_study",
        "code_version": code_version,
        **({"mlflow.source.git.commit": commit} if commit else {}),
        "cycle_id": cycle.cycle_id,
        "trigger": cycle.trigger,
        **parent_tag(parent),
        **tags,
        STUDY_SIDE_FROM_TAG: study_side_run_id,
    }
    run = client.create_run(
        experiment_id,
        run_name=run_name,
        tags={k: str(v)[:_MAX_TAG_LEN] for k, v in all_tags.items()},
    )
    run_id = run.info.run_id
    try:
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)[:_MAX_PARAM_LEN]) for k, v in params.items()],
            tags=[RunTag("mlflow.runName", run_name)],
        )
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            for name, payload in json_artifacts.items():
                (folder / name).write_text(json.dumps(payload, indent=2, default=str))
            local = _local_folder(run.info.artifact_uri or "")
            if local is not None:
                # A clear error for a folder that cannot be written, as ``log_study`` gives.
                ensure_writable_folder(
                    local, "MLflow artifact folder", "set FFE_MLFLOW_ARTIFACTS to a writable folder"
                )
            client.log_artifacts(run_id, str(folder))
        if datasets:
            label = ",".join(sorted({i for d in datasets for i in d.instruments}))
            client.log_inputs(run_id, datasets=dataset_inputs(datasets, dataset_source, label))
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return run_id


def _local_folder(uri: str) -> Path | None:
    # The local folder of a ``file:`` URI or plain path; None for remote stores (s3, ...).
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    return Path(uri) if parsed.scheme == "" else None
