"""Optuna study runner: batched, multi-objective, constrained, seeded, resumable, warm-started.

Objectives: Sharpe up, win rate up, max drawdown down. A trial that breaks a constraint (too few
trades, too deep a drawdown, too low a win rate) is infeasible through Optuna's trial constraints
(stored as ``Trial.set_constraint`` stores them), so it never reaches the Pareto front. Trials are
asked in batches and the whole batch is evaluated in one call (the engine runs it in parallel),
then told. The study stops at its trial count, at its time limit, or early when the feasible Pareto
front has not improved for ``patience`` trials. The storage is passed in, opened
(``ffe_dagster.resources.optuna_storage`` creates its files and connects), so nothing here does I/O
beyond Optuna's own calls on it; a study re-created with the same name resumes where it stopped. On
PostgreSQL storages (journal or RDB) every trial of the batch being evaluated gets heartbeats, so
several workers can share a study and the trials of one that is killed are failed and retried.
"""

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import optuna
import sqlalchemy.exc
from optuna.distributions import (
    BaseDistribution,
)
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.study._constrained_optimization import _CONSTRAINTS_KEY
from optuna.trial import FrozenTrial, Trial, TrialState
from sqlalchemy.engine import make_url

from ffe_dagster.core.backtest.metrics import Metrics
from ffe_dagster.core.study.evaluation import Params, ParamValue
from ffe_dagster.core.study.heartbeat import (
    BatchHeartbeat,
    fail_stale_trials,
    heartbeat_storage,
    quiet_heartbeat_warnings,
)
from ffe_dagster.core.study.level_specs import Constraints, ParamRange
from ffe_dagster.core.study.search_space import (
    build_distributions,
    clip_to_space,
    constraint_violations,
)
from ffe_dagster.core.study.tpe import SplitOnceTPESampler

DIRECTIONS = ("maximize", "maximize", "minimize")
OBJECTIVES = ("sharpe", "win_rate_pct", "max_drawdown_pct")
BatchObjective = Callable[[Sequence[Params]], Sequence[Metrics]]

_log = logging.getLogger(__name__)


@runtime_checkable
class BatchingStorage(Protocol):
    """A storage that can write a block of operations at once (one batch's asks, or its tells):
    ``ffe_dagster.resources.journal_batches.BatchedJournalStorage``. What a process killed
    inside the block had done there is lost as a whole, and the resumed study runs those trials
    again."""

    def batch(self) -> AbstractContextManager[None]:
        """Hold this block's writes until it ends."""
        ...


def _batched(storage: BaseStorage) -> AbstractContextManager[None]:
    return storage.batch() if isinstance(storage, BatchingStorage) else nullcontext()


class StorageUnavailableError(RuntimeError):
    """The database behind the Optuna storage cannot be reached (down, restarting, network)."""


def _unavailable_message(url: str | None, study_name: str | None) -> str:
    # Never the password: only the URL rendered with it hidden, and its parts.
    where = "the Optuna storage database"
    if url is not None:
        parts = make_url(url)
        where = (
            f"database {parts.database!r} on {parts.host or 'localhost'}:"
            f"{parts.port or 'default port'} ({parts.render_as_string(hide_password=True)})"
        )
    study = f"study {study_name!r}" if study_name is not None else "a study"
    return (
        f"Optuna storage unreachable: {where} does not answer. Trials told before the failure "
        f"are stored; once the database is back, run again and {study} resumes from the stored "
        "trials (the batch that was being evaluated is failed and replaced)."
    )


def _is_unreachable(exc: BaseException) -> bool:
    # Optuna wraps errors raised inside its sessions in StorageInternalError; only a lost or
    # refused connection underneath means "unreachable" (not, say, a value too long for a column).
    cause = exc.__cause__ if isinstance(exc, StorageInternalError) else exc
    return isinstance(cause, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError)


@contextmanager
def reachable(storage: str | BaseStorage, study_name: str | None = None) -> Iterator[None]:
    """Turn a lost database connection inside the block into :class:`StorageUnavailableError`
    (``storage`` is a URL or a storage; an RDB storage's URL is named with its password hidden).
    """
    try:
        yield
    except (
        StorageInternalError,
        sqlalchemy.exc.OperationalError,
        sqlalchemy.exc.InterfaceError,
    ) as exc:
        if not _is_unreachable(exc):
            raise
        url = storage if isinstance(storage, str) else getattr(storage, "url", None)
        message = _unavailable_message(url if isinstance(url, str) else None, study_name)
        raise StorageUnavailableError(message) from exc


@dataclass(frozen=True, slots=True)
class StudyConfig:
    """Where and how long a study runs."""

    study_name: str
    storage: BaseStorage
    n_trials: int
    seed: int
    constraints: Constraints
    timeout_s: float | None = None
    batch_size: int = 16
    patience: int | None = None
    sampler: str = "tpe"
    # One worker per study (the default): trials left RUNNING by a killed process are failed on
    # resume. With several workers on one study, set False: then a killed worker's trials are
    # failed only once their heartbeat (``resources.optuna_storage.open_storage``) is older than
    # the grace period, by whichever worker asks next, and retried with the same parameters.
    # Without heartbeats (a journal file) they stay RUNNING.
    fail_stale_running: bool = True
    # User attributes written on every trial as it is asked (before it is evaluated), e.g. which
    # worker process holds it: a RUNNING trial then says whose it is.
    trial_attrs: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class TrialRecord:
    """One finished trial: its parameters, train metrics and feasibility."""

    number: int
    params: Mapping[str, ParamValue]
    metrics: Mapping[str, float]
    feasible: bool


@dataclass(frozen=True, slots=True)
class StudyOutcome:
    """All finished trials of a study, its feasible Pareto front, and what this call added."""

    study_name: str
    trials: tuple[TrialRecord, ...]
    pareto_numbers: tuple[int, ...]
    resumed_trials: int
    new_trials: int
    stop_reason: str = "trials"  # "trials", "timeout" or "converged"
    seconds: float = 0.0


def complete_trial_count(study_name: str, storage: BaseStorage) -> int | None:
    """How many complete trials the stored study ``study_name`` holds; None when there is none."""
    with reachable(storage, study_name):
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
        except KeyError:
            return None
        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _record(trial: FrozenTrial) -> TrialRecord:
    constraints = trial.constraints
    return TrialRecord(
        number=trial.number,
        params=dict(trial.params),
        metrics={k: float(v) for k, v in trial.user_attrs.get("metrics", {}).items()},
        feasible=all(v <= 0.0 for v in constraints.values()),
    )


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler called ``name``: ``tpe`` (multi-objective TPE, constant liar so a batch's trials
    spread out; ``SplitOnceTPESampler`` draws the same numbers as Optuna's, faster) or ``nsga2``;
    both honour ``set_constraint`` and the seed."""
    if name == "tpe":
        return SplitOnceTPESampler(seed=seed, constant_liar=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}; known: ['nsga2', 'tpe']")


def _objective_vector(metrics: Mapping[str, float]) -> tuple[float, ...]:
    # All objectives as "larger is better", for the dominance test.
    return tuple(
        metrics[name] if d == "maximize" else -metrics[name]
        for name, d in zip(OBJECTIVES, DIRECTIONS, strict=True)
    )


@dataclass
class ParetoTracker:
    """The feasible Pareto front so far, and how many trials since it last improved."""

    front: list[tuple[float, ...]]
    since_improvement: int = 0

    def add(self, record: TrialRecord) -> bool:
        """Fold in one trial; True when it joined the front (nothing on the front covers it)."""
        self.since_improvement += 1
        if not record.feasible:
            return False
        point = _objective_vector(record.metrics)
        if any(all(f >= p for f, p in zip(other, point, strict=True)) for other in self.front):
            return False
        self.front = [
            o for o in self.front if not all(p >= f for f, p in zip(o, point, strict=True))
        ]
        self.front.append(point)
        self.since_improvement = 0
        return True


def _resume(study: optuna.Study, config: StudyConfig) -> tuple[int, ParetoTracker]:
    # What a study already holds: its complete trials and their Pareto front.
    if config.fail_stale_running:
        for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            # A trial asked by a process that died; its batch was never told.
            study.tell(stale.number, state=TrialState.FAIL)
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    tracker = ParetoTracker(front=[])
    for trial in done:
        tracker.add(_record(trial))
    tracker.since_improvement = 0
    return len(done), tracker


def _store_constraints(study: optuna.Study, trial: Trial, violations: Mapping[str, float]) -> None:
    # What Trial.set_constraint stores (the attribute FrozenTrial.constraints reads), without
    # its read of the trial before each write, there to ignore a constraint set twice, which a
    # trial told once never does. On an RDB storage that read loads the whole RUNNING trial
    # (params, attributes, values) again: three per trial were 11 % of a PostgreSQL level's wall
    # time. tests/core/test_optimize.py reads the constraints back through Optuna.
    for key, value in violations.items():
        if math.isnan(value):
            raise ValueError(f"constraint {key!r} of trial {trial.number} is NaN")
        study._storage.set_trial_system_attr(
            trial._trial_id, f"{_CONSTRAINTS_KEY}:{key}", float(value)
        )


def _tell(
    study: optuna.Study, trial: Trial, metrics: Metrics, constraints: Constraints
) -> FrozenTrial | None:
    """Store one evaluated trial; None when it was no longer RUNNING (failed as stale)."""
    try:
        _store_constraints(study, trial, constraint_violations(metrics, constraints))
        trial.set_user_attr("metrics", metrics.as_dict())
        frozen = study.tell(
            trial, [getattr(metrics, name) for name in OBJECTIVES], skip_if_finished=True
        )
    except UpdateFinishedTrialError:
        frozen = None
    if frozen is None or frozen.state != TrialState.COMPLETE:
        # Its heartbeats came later than the grace period (a stalled process or database), so
        # another worker failed it and queued its retry: counting it here would count it twice.
        _log.warning("trial %d was failed as stale while evaluated; its retry runs", trial.number)
        return None
    return frozen


def _ask(
    study: optuna.Study,
    dists: dict[str, BaseDistribution],
    n: int,
    config: StudyConfig,
    heartbeat: BaseHeartbeat | None,
) -> list[Trial]:
    batch: list[Trial] = []
    for _ in range(n):
        with quiet_heartbeat_warnings():
            trial = study.ask(dists)
        if heartbeat is not None:
            # At once: a trial with no heartbeat at all is never stale, so a worker killed
            # before the batch's first beat would leave it RUNNING for good.
            heartbeat.record_heartbeat(trial._trial_id)
        try:
            for key, value in config.trial_attrs:
                trial.set_user_attr(key, value)
        except UpdateFinishedTrialError:
            # Failed as stale by another worker already (this process stalled past the grace
            # period, optuna/optuna#5582): its retry is queued; evaluating it would count twice.
            _log.warning("trial %d was failed as stale before it was evaluated", trial.number)
            continue
        batch.append(trial)
    return batch


def _evaluate_and_tell(
    study: optuna.Study,
    batch: list[Trial],
    evaluate: BatchObjective,
    config: StudyConfig,
    heartbeat: BaseHeartbeat | None,
) -> Iterator[FrozenTrial]:
    """Evaluate one asked batch and store it, yielding each trial that completed once told.

    On a batching storage the tells are one block: a process killed before the block ends
    leaves the whole batch RUNNING (failed and replaced on resume), however many were yielded.
    """
    # Optuna's own heartbeat thread covers one trial inside Study.optimize; a batch needs
    # all of its trials kept alive, through the tells too.
    beating = (
        BatchHeartbeat(heartbeat, [t._trial_id for t in batch])
        if heartbeat is not None
        else nullcontext()
    )
    with beating:
        try:
            results = evaluate([t.params for t in batch])
        except Exception:
            with _batched(config.storage):
                for trial in batch:
                    study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise
        with _batched(config.storage):
            for trial, metrics in zip(batch, results, strict=True):
                frozen = _tell(study, trial, metrics, config.constraints)
                if frozen is not None:
                    yield frozen


def run_study(
    evaluate: BatchObjective,
    space: Sequence[ParamRange],
    config: StudyConfig,
    *,
    warm_start: Params | None = None,
    on_trial: Callable[[TrialRecord, int], None] | None = None,
) -> StudyOutcome:
    """Run (or resume) a study until it holds ``n_trials`` finished trials, time runs out, or the
    Pareto front stops improving for ``patience`` trials.

    ``evaluate`` scores a batch of parameter sets at once. ``warm_start`` (the previous level's
    choice) is enqueued as the first trial of a new study. ``on_trial`` is called after each trial
    with the record and the count finished so far.

    With a heartbeat storage (``resources.optuna_storage.open_storage`` of a PostgreSQL URL) every
    trial of the batch being evaluated gets heartbeats, and with ``fail_stale_running=False``
    the stale trials of dead workers are failed before each ask and their retries (same
    parameters) asked first; a retry that completes counts like any trial, so the study still
    ends at ``n_trials``. Raises
    :class:`StorageUnavailableError` when the storage's database stops answering.
    """
    if config.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {config.batch_size}")
    with reachable(config.storage, config.study_name):
        return _run_study(evaluate, space, config, warm_start, on_trial)


def _run_study(
    evaluate: BatchObjective,
    space: Sequence[ParamRange],
    config: StudyConfig,
    warm_start: Params | None,
    on_trial: Callable[[TrialRecord, int], None] | None,
) -> StudyOutcome:
    dists = build_distributions(space)
    heartbeat = heartbeat_storage(config.storage)
    study = optuna.create_study(
        study_name=config.study_name,
        storage=config.storage,
        directions=list(DIRECTIONS),
        sampler=make_sampler(config.sampler, config.seed),
        load_if_exists=True,
    )
    finished, tracker = _resume(study, config)
    resumed = finished
    if warm_start is not None and finished == 0:
        study.enqueue_trial(clip_to_space(warm_start, dists), skip_if_exists=True)
    started = time.monotonic()
    reason = "trials"
    # A study that already converged for this trial target stays converged: resuming it must not
    # restart the patience count and add trials a run with the same inputs would not have added.
    converged = f"ffe:converged:{config.n_trials}:{config.patience}"
    if config.patience is not None and converged in study.user_attrs:
        reason = "converged"
    while reason == "trials" and finished < config.n_trials:
        if config.timeout_s is not None and time.monotonic() - started > config.timeout_s:
            reason = "timeout"
            break
        if config.patience is not None and tracker.since_improvement >= config.patience:
            reason = "converged"
            break
        if heartbeat is not None and not config.fail_stale_running:
            # Trials of a dead worker are failed and, through the storage's callback, enqueued
            # again: the asks below take those WAITING retries first.
            fail_stale_trials(study)
        n = min(config.batch_size, config.n_trials - finished)
        with _batched(config.storage):
            batch = _ask(study, dists, n, config, heartbeat)
        if not batch:
            continue
        for frozen in _evaluate_and_tell(study, batch, evaluate, config, heartbeat):
            finished += 1
            record = _record(frozen)
            tracker.add(record)
            if on_trial is not None:
                on_trial(record, finished)
    if reason == "converged" and converged not in study.user_attrs:
        study.set_user_attr(converged, finished)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return StudyOutcome(
        study_name=config.study_name,
        trials=tuple(_record(t) for t in complete),
        pareto_numbers=tuple(sorted(t.number for t in study.best_trials)),
        resumed_trials=resumed,
        new_trials=finished - resumed,
        stop_reason=reason,
        seconds=time.monotonic() - started,
    )
