"""The MLflow run of a retested level: a level whose study side was kept and whose test side was
computed again on new bars (``core/study/levels.retest_level``), logged by the level asset
(``assets/curriculum.py``) with the fields a level run in full logs."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dagster import AssetExecutionContext

from ffe_dagster.core.backtest.metrics import split_non_finite
from ffe_dagster.core.study.datasets import StudyDataset
from ffe_dagster.core.study.level_result import LevelResult
from ffe_dagster.core.study.level_specs import CurriculumSpec, LevelSpec
from ffe_dagster.resources.provenance import code_version, git_commit
from ffe_dagster.resources.tracking import MlflowTrackingResource
from ffe_dagster.resources.tracking_cycles import DatasetSource, cycle_ref
from ffe_dagster.resources.tracking_retest import log_retested_study


@dataclass(frozen=True, slots=True)
class RetestedLevel:
    """Which level was retested, and under what: its spec, curriculum, trial profile and target,
    and its study's identity (the run's ``data_fingerprint`` tag)."""

    spec: LevelSpec
    curriculum: CurriculumSpec
    trial_profile: str
    n_trials: int
    fingerprint: str


def log_retested_level(
    context: AssetExecutionContext,
    tracking: MlflowTrackingResource,
    result: LevelResult,
    level: RetestedLevel,
    *,
    data_bars: Sequence[str],
    data_range: str,
    datasets: Sequence[StudyDataset],
    dataset_source: DatasetSource,
) -> str:
    """Log ``result`` (retested) under this cycle's MLflow parent; returns the run id.

    Tags, params and metrics are those ``assets/curriculum.py`` logs for a level run in full
    (keep the two alike), from the new test side; the study side's plots and tables stay in
    ``result.study_side_from_run`` (``resources/tracking_retest.py``). ``data_bars`` are the
    instruments the level read.
    """
    spec, curriculum = level.spec, level.curriculum
    if result.study_side_from_run is None:
        raise ValueError(f"level {spec.level}: a retested result names its study side's run")
    chosen = result.chosen
    validation = dict(chosen.validation) if chosen else {}
    # MLflow stores inf as 1.8e308: a profit factor without losses goes to a tag "inf".
    metrics, non_finite = split_non_finite(
        {
            **{f"validation_{k}": v for k, v in validation.items()},
            **{f"test_{k}": v for k, v in result.test.items()},
            "feasible_trials": float(result.feasible_trials),
            "passed": float(result.passed),
        }
    )
    params: dict[str, Any] = {
        "n_trials": level.n_trials,
        "seed": curriculum.seed,
        "strategy": curriculum.strategy,
        **{f"best_{k}": v for k, v in (result.chosen_params or {}).items()},
    }
    return log_retested_study(
        tracking,
        study_side_run_id=result.study_side_from_run,
        run_name=f"{spec.asset} {context.run.run_id[:8]}",
        tags={
            **{f"metric.{k}": v for k, v in non_finite.items()},
            "level": str(spec.level),
            "direction": spec.direction.value,
            "instruments": ",".join(sorted(data_bars)),
            "dagster_run_id": context.run.run_id,
            "study_name": result.study_name,
            "trial_profile": level.trial_profile,
            "passed": str(result.passed),
            "data_range": data_range,
            "partition": context.partition_key if context.has_partition_key else "unpartitioned",
            "data_fingerprint": level.fingerprint,
        },
        params=params,
        metrics=metrics,
        json_artifacts={
            "best_params.json": result.chosen_params,
            "level_result.json": result.to_json(),
        },
        cycle=cycle_ref(context.run.tags, context.run.run_id),
        code_version=code_version(git_commit()),
        datasets=datasets,
        dataset_source=dataset_source,
    )
