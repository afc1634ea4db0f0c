"""The MLflow run of a retested level: a level whose study side was kept and whose test side was
computed again on new bars (``core/study/levels.retest_level``), logged by the level asset
(``assets/curriculum.py``) with the fields of a level run in full (``assets/level_run.py``)."""

from collections.abc import Sequence

from dagster import AssetExecutionContext

from ffe_dagster.assets.level_run import LevelRun, level_run_fields
from ffe_dagster.core.study.datasets import StudyDataset
from ffe_dagster.core.study.level_result import LevelResult
from ffe_dagster.resources.provenance import code_version, git_commit
from ffe_dagster.resources.tracking import MlflowTrackingResource
from ffe_dagster.resources.tracking_cycles import DatasetSource, cycle_ref
from ffe_dagster.resources.tracking_retest import log_retested_study


def log_retested_level(
    context: AssetExecutionContext,
    tracking: MlflowTrackingResource,
    result: LevelResult,
    level: LevelRun,
    *,
    data_bars: Sequence[str],
    datasets: Sequence[StudyDataset],
    dataset_source: DatasetSource,
) -> str:
    """Log ``result`` (retested) under this cycle's MLflow parent; returns the run id.

    Tags, params and metrics are a level run's (``level_run_fields``), from the new test side;
    the study side's plots and tables stay in ``result.study_side_from_run``
    (``resources/tracking_retest.py``). ``data_bars`` are the instruments the level read.
    """
    if result.study_side_from_run is None:
        raise ValueError(f"level {level.spec.level}: a retested result names its study side's run")
    return log_retested_study(
        tracking,
        study_side_run_id=result.study_side_from_run,
        fields=level_run_fields(context, level, result, instruments=data_bars),
        cycle=cycle_ref(context.run.tags, context.run.run_id),
        code_version=code_version(git_commit()),
        datasets=datasets,
        dataset_source=dataset_source,
    )
