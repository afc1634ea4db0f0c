"""``study_workers_job``: several processes add trials to one level's Optuna study at once.

The job only pre-fills the study. The level asset stays the single place that chooses a
parameter set on validation, reports the test period and logs to MLflow: materialized afterwards,
it resumes the same study (same name, same storage), finds its trials already there (or tops up
the missing ones) and goes straight to the choice.

Graph: ``plan_level_study`` -> one ``run_study_worker`` per worker (dynamic fan-out) ->
``summarize_study_workers``. The plan op reads the warehouse once and hands the level data to the
workers as an op output, so a worker needs the Optuna storage and the IO manager's storage but not
the DuckDB file; that is what lets workers run on other machines (deploy/WORKERS.md).
"""

import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace

import optuna
from dagster import (
    Config,
    DynamicOut,
    DynamicOutput,
    ExecutorDefinition,
    JobDefinition,
    MetadataValue,
    OpExecutionContext,
    Out,
    Output,
    job,
    multiprocess_executor,
    op,
)
from optuna.trial import TrialState

from ffe_dagster.assets.curriculum import study_fingerprint
from ffe_dagster.assets.loading import load_level_data
from ffe_dagster.config import Universe
from ffe_dagster.core.study.evaluation import Period
from ffe_dagster.core.study.heartbeat import fail_stale_trials, heartbeat_storage
from ffe_dagster.core.study.level_result import LevelResult
from ffe_dagster.core.study.level_specs import CurriculumSpec, LevelSpec
from ffe_dagster.core.study.levels import LevelData, level_evaluator, level_study_config
from ffe_dagster.core.study.optimize import BatchObjective, TrialRecord, run_study
from ffe_dagster.core.study.progression import Decision
from ffe_dagster.resources.studies import OptunaStorageResource
from ffe_dagster.resources.warehouse import WarehouseResource
from ffe_dagster.sources.files import curriculum_signals

JOB_NAME = "study_workers_job"
# Trial user attributes: the share a trial was added under, and the process ("host:pid") that
# asked it (a RUNNING trial thus says which worker holds it).
SHARE_ATTR = "share"
WORKER_ATTR = "worker"


class StudyWorkersConfig(Config):
    """Which level's study to fill, with how many parallel workers, up to how many trials."""

    level: int
    workers: int = 2
    # The number of COMPLETE trials the study should hold when the job ends; by default the
    # level's trial count for the trial profile, so the level asset then adds none.
    trials: int | None = None


@dataclass(frozen=True, slots=True)
class WorkerShare:
    """One worker's assignment: its number (1-based), sampler seed and trials to add.

    ``label`` (run id and worker number) is written on every trial the worker adds, so a step that
    runs again (its Celery task redelivered after its process was killed) counts what the first
    attempt already added and adds only the rest."""

    study_name: str
    level: int
    worker: int
    seed: int
    trials: int
    label: str = ""


@dataclass(frozen=True, slots=True)
class WorkerReport:
    """What one worker added to the study."""

    study_name: str
    worker: int
    seed: int
    asked: int
    new_trials: int
    numbers: tuple[int, ...]  # the trial numbers this worker told
    stop_reason: str
    seconds: float


def split_trials(missing: int, workers: int) -> list[int]:
    """``missing`` trials in ``workers`` near-equal shares, the larger ones first."""
    base, extra = divmod(max(missing, 0), workers)
    return [base + (1 if i < extra else 0) for i in range(workers)]


def complete_trials(study_name: str, storage: str | optuna.storages.BaseStorage) -> int:
    """How many COMPLETE trials the study holds now (all workers together)."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _level(curriculum: CurriculumSpec, level: int) -> tuple[LevelSpec, LevelSpec | None]:
    levels = list(curriculum.levels)
    for i, spec in enumerate(levels):
        if spec.level == level:
            return spec, levels[i - 1] if i else None
    known = [s.level for s in levels]
    raise ValueError(f"unknown curriculum level {level}; the curriculum has levels {known}")


def _check(config: StudyWorkersConfig) -> None:
    if config.workers <= 1:
        raise ValueError(
            f"workers must be at least 2, got {config.workers}: one worker is what "
            "materializing the level asset already does"
        )
    if config.trials is not None and config.trials < 1:
        raise ValueError(f"trials must be at least 1 when given, got {config.trials}")


def _refuse_skipped(spec: LevelSpec, previous_result: LevelResult | None) -> None:
    # The asset runs no study for a level the previous one allowed to skip
    # (docs/spec.md, Progression).
    progression = previous_result.progression if previous_result else None
    if progression is not None and progression.decision is Decision.SKIP_NEXT:
        reasons = "; ".join(progression.reasons)
        raise ValueError(
            f"level {spec.level} is skipped: the previous level met the skip rule ({reasons}); "
            "its asset runs no study, so there is nothing to fill"
        )


def share_trials(study_name: str, storage: str | optuna.storages.BaseStorage, label: str) -> int:
    """COMPLETE trials of the study added under the share ``label`` (by any attempt of it)."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    return sum(
        1
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get(SHARE_ATTR) == label
    )


def take_over_orphans(
    study_name: str, storage: str | optuna.storages.BaseStorage, label: str
) -> int:
    """Fail the trials an earlier attempt of share ``label`` left RUNNING, once their heartbeat is
    stale, so that they are retried (same parameters) by the asks that follow; returns how many.

    An attempt runs again when Celery hands back the task of a killed process; the trials that
    process held stop beating. If they keep beating past the grace period, another process is
    running this share right now (a task delivered twice): raise rather than work twice.
    """
    beating = heartbeat_storage(storage)
    if beating is None or not label:
        return 0
    interval = float(beating.get_heartbeat_interval() or 1)
    grace = float(getattr(beating, "grace_period", None) or 0) or 2 * interval
    study = optuna.load_study(study_name=study_name, storage=storage)

    def orphans() -> list[int]:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return [t.number for t in running if t.user_attrs.get(SHARE_ATTR) == label]

    first = orphans()
    deadline = time.monotonic() + grace + 3 * interval
    while left := orphans():
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"share {label}: trials {left} of an earlier attempt still have live heartbeats "
                f"after {grace:.0f} s; another process is running this share (the broker "
                "delivered its task twice: raise the transport's visibility_timeout)"
            )
        fail_stale_trials(study)
        time.sleep(interval)
    return len(first)


def worker_attrs(label: str) -> tuple[tuple[str, str], ...]:
    """The user attributes every trial of this worker carries: its share and its process."""
    return ((SHARE_ATTR, label), (WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}"))


def fill_share(
    objective: BatchObjective,
    curriculum: CurriculumSpec,
    share: WorkerShare,
    storage: optuna.storages.BaseStorage,
    on_trial: Callable[[TrialRecord, int], None] | None = None,
) -> tuple[int, float, str]:
    """Add ``share.trials`` trials to the shared study; returns (added, seconds, stop reason)."""
    # Every process on a shared study must leave the others' RUNNING trials alone:
    # fail_stale_running=True would fail them as if their process had died.
    base = level_study_config(curriculum, share.study_name, storage, 0, fail_stale_running=False)
    base = replace(base, seed=share.seed, trial_attrs=worker_attrs(share.label))
    # A redelivered step takes over what its first attempt left: the trials it told count, the
    # ones it held are failed and retried.
    take_over_orphans(share.study_name, storage, share.label)
    added = share_trials(share.study_name, storage, share.label) if share.label else 0
    seconds = 0.0
    reason = "trials"
    while added < share.trials:
        # run_study adds trials until the study holds n_trials COMPLETE ones, counted when it
        # starts. Other workers may finish trials between this count and that one, so the worker
        # adds fewer than asked; it then asks again for the rest of its share.
        before = complete_trials(share.study_name, storage)
        outcome = run_study(
            objective,
            curriculum.parameters,
            replace(base, n_trials=before + share.trials - added),
            on_trial=on_trial,
        )
        added += outcome.new_trials
        seconds += outcome.seconds
        reason = outcome.stop_reason
        if reason != "trials":
            break  # timeout or converged: asking again would not help
    return added, seconds, reason


def build_study_workers_job(
    curriculum: CurriculumSpec,
    universe: Universe,
    trial_profile: str,
    executor_def: ExecutorDefinition = multiprocess_executor,
    plan_op_tags: Mapping[str, str] | None = None,
) -> JobDefinition:
    """``study_workers_job`` for this curriculum, universe and trial profile.

    ``executor_def`` is Dagster's multiprocess executor (one process per worker on this machine);
    a cluster deployment passes ``dagster_celery.celery_executor`` or
    ``dagster_k8s.k8s_job_executor`` instead (deploy/WORKERS.md, deploy/executors/).
    ``plan_op_tags`` go on the plan op, the only step that reads the DuckDB warehouse; with
    celery, ``{"dagster-celery/queue": "<queue>"}`` sends it to the warehouse machine's worker.
    """

    @op(
        name="plan_level_study",
        tags=dict(plan_op_tags or {}),
        out={
            "data": Out(LevelData, description="The level's bars, regimes and hold-outs."),
            "shares": DynamicOut(WorkerShare, description="One assignment per worker."),
        },
    )
    def plan_level_study(
        context: OpExecutionContext,
        config: StudyWorkersConfig,
        warehouse: WarehouseResource,
        optuna_storage: OptunaStorageResource,
    ) -> Iterator[Output[LevelData] | DynamicOutput[WorkerShare]]:
        """Load the level's data as its asset does, name the study as the asset does, create it
        (warm-started with the previous level's choice when it is empty) and give each worker its
        share of the trials still missing."""
        spec, previous = _level(curriculum, config.level)
        _check(config)
        previous_result = warehouse.latest_level_result(previous.level) if previous else None
        _refuse_skipped(spec, previous_result)
        data = load_level_data(
            warehouse, universe, curriculum.holdout_days, signals=curriculum_signals(curriculum)
        )
        study_name = f"{spec.asset}-{study_fingerprint(spec, curriculum, data)}"
        storage = optuna_storage.storage(study_name)
        warm = previous_result.chosen_params if previous_result else None
        # run_study with n_trials=0 creates the study (load_if_exists) and enqueues the warm start
        # when the study has no COMPLETE trial, exactly as the asset's first try would, and adds no
        # trial. The evaluator is not needed for that, hence the objective that is never called.
        run_study(
            lambda batch: [],
            curriculum.parameters,
            level_study_config(curriculum, study_name, storage, 0, fail_stale_running=False),
            warm_start=warm,
        )
        target = config.trials or spec.trials[trial_profile]
        existing = complete_trials(study_name, storage)
        shares = split_trials(target - existing, config.workers)
        context.log.info(
            f"{study_name}: holds {existing} COMPLETE trials, target {target}; "
            f"{config.workers} workers add {shares}"
            + (f"; warm start {warm}" if warm and existing == 0 else "")
        )
        yield Output(data, output_name="data")
        for i, trials in enumerate(shares, start=1):
            share = WorkerShare(
                study_name=study_name,
                level=spec.level,
                worker=i,
                # Different seeds so the workers' samplers do not propose the same points.
                seed=curriculum.seed + i,
                trials=trials,
                label=f"{context.run_id}/worker_{i}",
            )
            yield DynamicOutput(share, mapping_key=f"worker_{i}", output_name="shares")

    @op(name="run_study_worker")
    def run_study_worker(
        context: OpExecutionContext,
        data: LevelData,
        share: WorkerShare,
        optuna_storage: OptunaStorageResource,
    ) -> WorkerReport:
        """Build the level's train objective from the planned data and add this worker's share
        of trials to the shared study (ask / evaluate / tell in batches, next to the other
        workers)."""
        spec, _ = _level(curriculum, share.level)
        evaluator = level_evaluator(spec, curriculum, data)
        numbers: list[int] = []
        step = max(1, share.trials // 5)

        def progress(record: TrialRecord, done: int) -> None:
            numbers.append(record.number)
            if len(numbers) % step == 0 or len(numbers) == share.trials:
                context.log.info(
                    f"worker {share.worker}: {len(numbers)}/{share.trials} trials "
                    f"(study holds {done}) {dict(record.metrics)}"
                )

        added, seconds, reason = fill_share(
            lambda batch: evaluator.evaluate_many(batch, Period.TRAIN),
            curriculum,
            share,
            optuna_storage.storage(share.study_name),
            progress,
        )
        context.log.info(
            f"worker {share.worker} (seed {share.seed}) added {added} of {share.trials} trials "
            f"in {seconds:.1f} s; stop reason {reason}"
        )
        return WorkerReport(
            study_name=share.study_name,
            worker=share.worker,
            seed=share.seed,
            asked=share.trials,
            new_trials=added,
            numbers=tuple(numbers),
            stop_reason=reason,
            seconds=round(seconds, 3),
        )

    @op(name="summarize_study_workers")
    def summarize_study_workers(
        context: OpExecutionContext,
        reports: list[WorkerReport],
        optuna_storage: OptunaStorageResource,
    ) -> Output[dict[str, object]]:
        """Log what each worker added and what the study holds now; the study name and trial
        counts are this op's output metadata."""
        reports = sorted(reports, key=lambda r: r.worker)
        (study_name,) = {r.study_name for r in reports}
        total = complete_trials(study_name, optuna_storage.storage(study_name))
        per_worker = {
            f"worker_{r.worker}": {
                "seed": r.seed,
                "asked": r.asked,
                "added": r.new_trials,
                "stop_reason": r.stop_reason,
                "seconds": r.seconds,
            }
            for r in reports
        }
        for name, row in per_worker.items():
            context.log.info(f"{study_name} {name}: {row}")
        context.log.info(f"{study_name}: {total} COMPLETE trials in the study")
        summary: dict[str, object] = {
            "study_name": study_name,
            "trials": total,
            "new_trials": sum(r.new_trials for r in reports),
            "per_worker": per_worker,
        }
        return Output(
            summary,
            metadata={
                "study_name": study_name,
                "trials": total,
                "new_trials": sum(r.new_trials for r in reports),
                "per_worker": MetadataValue.json(per_worker),
            },
        )

    @job(
        name=JOB_NAME,
        executor_def=executor_def,
        description=(
            "Pre-fill one curriculum level's Optuna study with several workers in parallel "
            f"(one step each; executor '{executor_def.name}', see deploy/WORKERS.md). Run "
            "config: ops.plan_level_study.config = {level, workers (default 2), trials (total, "
            "default the level's trial count)}. It makes no choice: materialize the level asset "
            "afterwards; it resumes this study, chooses on validation and logs to MLflow."
        ),
        tags={"ffe/trigger": "manual"},
    )
    def study_workers_job() -> None:
        data, shares = plan_level_study()
        reports = shares.map(lambda share: run_study_worker(data, share))
        summarize_study_workers(reports.collect())

    return study_workers_job
