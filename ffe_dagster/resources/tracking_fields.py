"""What one MLflow run holds of its own: its name, tags, params, metrics and JSON artifacts (the
tracking functions add where it sits: code version, cycle, parent), and the two halves of a level
study's run as ``MlflowTrackingResource.log_study`` sends them, possibly to the tracking worker:
what creates it (``StudyRunStart``) and what finishes it (``StudyRunContent``)."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

from ffe_dagster.core.study.convergence import StepValue
from ffe_dagster.core.study.datasets import StudyDataset
from ffe_dagster.resources.tracking_cycles import CycleRef, DatasetSource

if TYPE_CHECKING:  # plotting (matplotlib) is imported only by the runs that draw plots
    from ffe_dagster.core.reporting.plots import StudyPlotData


@dataclass(frozen=True, slots=True)
class RunFields:
    """A run's own fields; ``json_artifacts`` maps a file name to the payload written as JSON."""

    run_name: str
    tags: Mapping[str, str]
    params: Mapping[str, Any]
    metrics: Mapping[str, float]
    json_artifacts: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class StudyRunStart:
    """What a level study's run is created with: its name, its tags and the keyword tags."""

    run_name: str
    tags: Mapping[str, str]
    data_range: str | None = None
    partition: str | None = None
    code_version: str | None = None
    data_fingerprint: str | None = None
    cycle: CycleRef | None = None


@dataclass(frozen=True, slots=True)
class StudyRunContent:
    """What a level study's run is finished with: params, metrics, its tables and plots, the
    datasets it read (from ``dataset_source``) and its convergence steps."""

    run_name: str
    params: Mapping[str, Any]
    metrics: Mapping[str, float]
    trials: pl.DataFrame
    json_artifacts: Mapping[str, Any]
    tables: Mapping[str, pl.DataFrame] | None = None
    plots: "StudyPlotData | None" = None
    datasets: Sequence[StudyDataset] = ()
    dataset_source: DatasetSource | None = None
    convergence: Sequence[StepValue] = ()
