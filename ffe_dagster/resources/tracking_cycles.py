"""How a cycle looks in MLflow: one parent run per cycle, the studies' datasets, step metrics.

A cycle's steps may run in different processes and Dagster runs (the cycle chain carries the cycle
id in the ``ffe/cycle`` run tag), so the parent run is found by its ``cycle_id`` tag, or created
by whichever step logs first. Two steps creating it at once both keep the earliest parent and
delete their own duplicate, so a cycle ends with one parent.
"""

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, ViewType
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_PARENT_RUN_ID

from ffe_dagster.core.study.convergence import StepValue
from ffe_dagster.core.study.datasets import StudyDataset
from ffe_dagster.triggers import run_cycle_id, run_trigger

# MLflow 3's experiment kind (read from its UI bundle: without the tag the UI guesses, and an
# experiment of plain runs opens on the GenAI overview); "custom_model_development" opens on runs.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_DEVELOPMENT = "custom_model_development"
CYCLE_KIND = "cycle"
_BATCH = 1000  # MLflow's limit of metrics per log_batch call (mlflow.utils.validation)
_BAR_SCHEMA = json.dumps(
    {
        "mlflow_colspec": [
            {"type": "datetime", "name": "ts", "required": True},
            *({"type": "double", "name": c, "required": True} for c in ("open", "high", "low")),
            *({"type": "double", "name": c, "required": True} for c in ("close", "volume")),
        ]
    }
)


@dataclass(frozen=True, slots=True)
class CycleRef:
    """Which cycle a step belongs to: its id, what launched it, and the step's Dagster run."""

    cycle_id: str
    trigger: str
    dagster_run_id: str


def cycle_ref(tags: Mapping[str, str], dagster_run_id: str) -> CycleRef:
    """The cycle of a Dagster run, from its tags (``ffe/cycle``, the trigger tags)."""
    return CycleRef(run_cycle_id(tags, dagster_run_id), run_trigger(tags), dagster_run_id)


@dataclass(frozen=True, slots=True)
class DatasetSource:
    """Where a study's bars were read: the warehouse, its table and the bar interval."""

    warehouse: str
    table: str
    interval: str


def cycle_parent(client: MlflowClient, experiment_id: str, cycle: CycleRef) -> str:
    """The run id of the cycle's parent run, created (RUNNING) if the cycle has none yet; the
    step's Dagster run id is added to the parent's ``dagster_run_ids`` tag."""
    found = _parents(client, experiment_id, cycle.cycle_id)
    if not found:
        started = datetime.now(UTC)
        mine = client.create_run(
            experiment_id,
            run_name=f"cycle {started:%Y-%m-%d %H:%M} {cycle.trigger}",
            start_time=int(started.timestamp() * 1000),
            tags={
                "ffe.kind": CYCLE_KIND,
                "cycle_id": cycle.cycle_id,
                "trigger": cycle.trigger,
                "dagster_run_ids": cycle.dagster_run_id,
            },
        ).info.run_id
        found = _parents(client, experiment_id, cycle.cycle_id)
        for duplicate in found[1:]:
            if duplicate == mine:  # another step created the cycle's parent first
                client.delete_run(mine)
    parent = found[0]
    runs = client.get_run(parent).data.tags.get("dagster_run_ids", "")
    if cycle.dagster_run_id not in runs.split(","):
        client.set_tag(
            parent, "dagster_run_ids", ",".join(filter(None, [runs, cycle.dagster_run_id]))
        )
    return parent


def _parents(client: MlflowClient, experiment_id: str, cycle_id: str) -> list[str]:
    # Earliest first; run ids break a tie of start times the same way in every process.
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`ffe.kind` = '{CYCLE_KIND}' and tags.cycle_id = '{_quoted(cycle_id)}'",
        run_view_type=ViewType.ACTIVE_ONLY,
    )
    return [r.info.run_id for r in sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))]


def _quoted(value: str) -> str:
    if "'" in value:
        raise ValueError(f"a cycle id must not contain a quote: {value!r}")
    return value


def parent_tag(parent_run_id: str) -> dict[str, str]:
    """The tag that nests a run under ``parent_run_id`` in the MLflow UI."""
    return {MLFLOW_PARENT_RUN_ID: parent_run_id}


def dataset_inputs(
    datasets: Sequence[StudyDataset], source: DatasetSource, label: str
) -> list[DatasetInput]:
    """MLflow dataset inputs of a study's periods: named ``<label> <context>``, the content
    digest, the warehouse table and each instrument's window as source, the context as the
    ``mlflow.data.context`` input tag (the runs table's Dataset column shows name, digest and
    context)."""
    inputs = []
    for d in datasets:
        windows = {
            inst: {
                "first": min(w.first for w in d.windows if w.instrument == inst),
                "last": max(w.last for w in d.windows if w.instrument == inst),
                "bars": sum(w.bars for w in d.windows if w.instrument == inst),
                "windows": sum(w.instrument == inst for w in d.windows),
            }
            for inst in d.instruments
        }
        dataset = Dataset(
            name=f"{label} {d.context}",
            digest=d.digest,
            source_type="duckdb",
            source=json.dumps(
                {
                    "uri": source.warehouse,
                    "table": source.table,
                    "interval": source.interval,
                    "windows": windows,
                }
            ),
            schema=_BAR_SCHEMA,
            profile=json.dumps({"num_rows": d.bars, "instruments": list(d.instruments)}),
        )
        inputs.append(DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, d.context)]))
    return inputs


def log_datasets(
    client: MlflowClient, run_id: str, datasets: Sequence[StudyDataset], source: DatasetSource
) -> None:
    """Log a level's periods as the run's dataset inputs (``dataset_inputs``), labelled with the
    instruments they hold; nothing when there are none."""
    if datasets:
        label = ",".join(sorted({i for d in datasets for i in d.instruments}))
        client.log_inputs(run_id, datasets=dataset_inputs(datasets, source, label))


def log_step_metrics(
    client: MlflowClient, run_id: str, points: Iterable[StepValue], prefix: str
) -> int:
    """Log ``points`` as step metrics ``<prefix><name>`` (step = trial number) in batches of
    MLflow's limit; returns how many were logged."""
    now = int(time.time() * 1000)
    metrics = [Metric(f"{prefix}{p.name}", float(p.value), now, p.step) for p in points]
    for i in range(0, len(metrics), _BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + _BATCH])
    return len(metrics)
