"""The MLflow fields of a level's run, in one place: the run name, tags, params, metrics and JSON
artifacts a level logs, whether its study ran in full (``assets/curriculum.py``) or only its test
side was computed again (``assets/level_retest.py``). Both read them from the level's stored
result, so the two runs cannot drift apart; a reused level copies its source run's fields
(``resources/tracking_reuse.py``)."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dagster import AssetExecutionContext

from ffe_dagster.core.backtest.metrics import split_non_finite
from ffe_dagster.core.study.level_result import LevelResult
from ffe_dagster.core.study.level_specs import CurriculumSpec, LevelSpec
from ffe_dagster.resources.tracking_fields import RunFields


@dataclass(frozen=True, slots=True)
class LevelRun:
    """Which level ran, and under what: its spec, curriculum, trial profile and target, and its
    study's identity (the run's ``data_fingerprint`` tag)."""

    spec: LevelSpec
    curriculum: CurriculumSpec
    trial_profile: str
    n_trials: int
    fingerprint: str


def data_range(segments: Sequence[tuple[str, str, str, int]]) -> str:
    """First and last bar over all of a level's segments, e.g. ``2020-01-01T00:00:00 .. ...``
    (``no data`` without segments)."""
    # The timestamps are ISO strings, so the string order is the time order (zero microseconds
    # dropped for reading).
    if not segments:
        return "no data"
    first, last = min(s[1] for s in segments), max(s[2] for s in segments)
    return f"{first.removesuffix('.000000')} .. {last.removesuffix('.000000')}"


def level_run_fields(
    context: AssetExecutionContext,
    level: LevelRun,
    result: LevelResult,
    *,
    instruments: Iterable[str],
) -> RunFields:
    """The fields of ``result``'s MLflow run, logged by ``context``'s Dagster run; ``instruments``
    are those the level read. Non-finite metrics go to tags ``metric.<name>`` (MLflow stores inf
    as 1.8e308: a profit factor without losses is a tag ``inf``)."""
    spec = level.spec
    chosen = result.chosen
    validation = dict(chosen.validation) if chosen else {}
    metrics, non_finite = split_non_finite(
        {
            **{f"validation_{k}": v for k, v in validation.items()},
            **{f"test_{k}": v for k, v in result.test.items()},
            "feasible_trials": float(result.feasible_trials),
            "passed": float(result.passed),
        }
    )
    run_id = context.run.run_id
    return RunFields(
        run_name=f"{spec.asset} {run_id[:8]}",
        tags={
            **{f"metric.{k}": v for k, v in non_finite.items()},
            "level": str(spec.level),
            "direction": spec.direction.value,
            "instruments": ",".join(sorted(instruments)),
            "dagster_run_id": run_id,
            "study_name": result.study_name,
            "trial_profile": level.trial_profile,
            "passed": str(result.passed),
            "data_range": data_range(result.segments),
            "partition": context.partition_key if context.has_partition_key else "unpartitioned",
            "data_fingerprint": level.fingerprint,
        },
        params={
            "n_trials": level.n_trials,
            "seed": level.curriculum.seed,
            "strategy": level.curriculum.strategy,
            **{f"best_{k}": v for k, v in (result.chosen_params or {}).items()},
        },
        metrics=metrics,
        json_artifacts={
            "best_params.json": result.chosen_params,
            "level_result.json": result.to_json(),
        },
    )
