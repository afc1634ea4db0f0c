"""The model registry of promoted parameters: a version per promoted set, from a dedicated run
holding ``parameters/params.json`` and ``parameters/metrics.json``, and the regime's alias
``<regime>-current`` pointing at its current version (``tracking.MlflowTrackingResource``)."""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from ffe_dagster.resources.tracking_cycles import parent_tag
from ffe_dagster.resources.tracking_runs import finish_run, started_run

REGISTERED_MODEL = "ffe_promoted_parameters"


def current_alias(regime: str) -> str:
    """The registry alias of a regime's current version, e.g. ``bull-current``."""
    return f"{regime.lower()}-current"


def _numeric(value: Any) -> bool:
    # MLflow metrics are numbers; anything else (a window label, a list) stays in metrics.json.
    return isinstance(value, int | float)


def _source_parent(client: MlflowClient, source_run_id: str | None) -> dict[str, str]:
    # A promoted set's run sits in the cycle of the study that found it, beside that study.
    if not source_run_id:
        return {}
    try:
        parent = client.get_run(source_run_id).data.tags.get(MLFLOW_PARENT_RUN_ID)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise
    return parent_tag(parent) if parent else {}


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    """Create the registered model ``name`` of promoted parameters unless it exists."""
    try:
        client.get_registered_model(name)
        return
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    try:
        client.create_registered_model(
            name,
            tags={"ffe.kind": "promoted_parameters"},
            description=(
                "Exit and risk parameters promoted per market regime; the alias "
                "<regime>-current (bull-current, bear-current, sideways-current, "
                "default-current) points at each regime's current version."
            ),
        )
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # created meanwhile elsewhere
            raise


def register_version(
    client: MlflowClient,
    experiment_id: str,
    model: str,
    *,
    regime: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    source_run_id: str | None,
    description: str,
    tags: Mapping[str, str],
) -> int:
    """Log ``params`` and ``metrics`` in a run of their own (beside the level study that found
    them), register it as a new version of ``model`` tagged ``tags`` and point the regime's
    alias at it; returns the version number."""
    ensure_registered_model(client, model)

    def artifacts(folder: Path) -> None:
        target = folder / "parameters"
        target.mkdir()
        (target / "params.json").write_text(json.dumps(dict(params), indent=2, default=str))
        (target / "metrics.json").write_text(json.dumps(dict(metrics), indent=2, default=str))

    name = f"promoted {regime}"
    run_id = started_run(
        client,
        experiment_id,
        run_name=name,
        tags={
            "ffe.kind": "promoted_parameters",
            **tags,
            **_source_parent(client, source_run_id),
        },
    )
    finish_run(
        client,
        run_id,
        run_name=name,
        params=params,
        metrics={k: v for k, v in metrics.items() if _numeric(v)},
        artifacts=artifacts,
    )
    run = client.get_run(run_id)
    version = client.create_model_version(
        model,
        source=f"{run.info.artifact_uri}/parameters",
        run_id=run_id,
        tags=dict(tags),
        description=description,
    )
    number = int(version.version)
    client.set_registered_model_alias(model, current_alias(regime), str(number))
    return number
