"""A reused level in this cycle's MLflow parent: a reference run to the run that holds it.

A level whose study and inputs are unchanged reuses its stored result instead of running again
(``core/study/level_reuse.py``). Comparing two cycles in MLflow is selecting two parents, so the new
cycle still needs the level under its parent: a finished run with the source run's params, final
metrics, tags and dataset inputs, tagged ``reused_from`` with the source run id and this
cycle's Dagster run. Its plots and tables stay in the source run (nothing is uploaded twice), and
so do the convergence step metrics: this cycle ran no trial.
"""

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from ffe_dagster.resources.tracking import MlflowTrackingResource
from ffe_dagster.resources.tracking_cycles import CycleRef, cycle_parent, parent_tag

REUSED_FROM_TAG = "reused_from"
# Tags that say where a run sits: the reference run gets this cycle's, not the source's.
_PLACE_TAGS = frozenset(
    {MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME, "cycle_id", "trigger", "dagster_run_id"}
)
_STEP_METRICS = "convergence/"  # series by trial number, of the trials the source run ran


def log_reused_study(
    tracking: MlflowTrackingResource, source_run_id: str, cycle: CycleRef, dagster_run_id: str
) -> str:
    """Log the reference run of a reused level under ``cycle``'s parent; returns its run id."""
    client: MlflowClient = tracking.client()
    experiment_id = tracking.experiment_id(client)
    source = client.get_run(source_run_id)
    parent = cycle_parent(client, experiment_id, cycle)
    tags = {k: v for k, v in source.data.tags.items() if k not in _PLACE_TAGS}
    tags |= {
        "cycle_id": cycle.cycle_id,
        "trigger": cycle.trigger,
        "dagster_run_id": dagster_run_id,
        REUSED_FROM_TAG: source_run_id,
        **parent_tag(parent),
    }
    run = client.create_run(experiment_id, run_name=source.info.run_name, tags=tags)
    run_id = run.info.run_id
    try:
        client.log_batch(
            run_id,
            metrics=[
                Metric(k, v, source.info.end_time or 0, 0)
                for k, v in source.data.metrics.items()
                if not k.startswith(_STEP_METRICS)
            ],
            params=[Param(k, v) for k, v in source.data.params.items()],
        )
        if source.inputs and source.inputs.dataset_inputs:
            client.log_inputs(run_id, datasets=list(source.inputs.dataset_inputs))
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return run_id
