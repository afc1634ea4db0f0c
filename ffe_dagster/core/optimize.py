"""Optuna study runner: batched, multi-objective, constrained, seeded, resumable, warm-started.

Objectives: Sharpe up, win rate up, max drawdown down. A trial that breaks a constraint
(too few trades, too deep a drawdown, too low a win rate) is infeasible through
``Trial.set_constraint``, so it never reaches the Pareto front. Trials are asked in batches and the
whole batch is evaluated in one call (the engine runs it in parallel), then told. The study stops
at its trial count, at its time limit, or early when the feasible Pareto front has not improved for
``patience`` trials. The storage is passed in; a study re-created with the same name resumes where
it stopped.
"""

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from ffe_dagster.core.curriculum import Constraints, ParamRange
from ffe_dagster.core.evaluation import Params, ParamValue
from ffe_dagster.core.metrics import Metrics

DIRECTIONS = ("maximize", "maximize", "minimize")
OBJECTIVES = ("sharpe", "win_rate_pct", "max_drawdown_pct")
JOURNAL_SCHEME = "journal:///"

BatchObjective = Callable[[Sequence[Params]], Sequence[Metrics]]


def open_storage(url: str) -> str | BaseStorage:
    """An Optuna storage for ``url``.

    ``journal:///path/file.log`` is Optuna's append-only journal file (the local default: several
    times faster than SQLite per trial, safe across processes through a file lock); any other URL
    is an SQLAlchemy URL for Optuna's RDB storage (SQLite, PostgreSQL).
    """
    if url.startswith(JOURNAL_SCHEME):
        path = Path("/" + url.removeprefix(JOURNAL_SCHEME).lstrip("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise ValueError(f"not an Optuna storage URL: {url!r} (journal:///path or an SQL URL)")
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return url


@dataclass(frozen=True, slots=True)
class StudyConfig:
    """Where and how long a study runs."""

    study_name: str
    storage: str | BaseStorage
    n_trials: int
    seed: int
    constraints: Constraints
    timeout_s: float | None = None
    batch_size: int = 16
    patience: int | None = None
    sampler: str = "tpe"
    # One worker per study (the default): trials left RUNNING by a killed process are failed on
    # resume. With several workers on one study, set False and rely on storage heartbeats.
    fail_stale_running: bool = True


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


def build_distributions(space: Sequence[ParamRange]) -> dict[str, BaseDistribution]:
    """Optuna distributions for the parameter ranges of the curriculum."""
    dists: dict[str, BaseDistribution] = {}
    for p in space:
        if p.choices:
            dists[p.name] = CategoricalDistribution(list(p.choices))
        elif p.step is not None and float(p.step).is_integer() and float(p.low).is_integer():
            dists[p.name] = IntDistribution(int(p.low), int(p.high), step=int(p.step))
        else:
            dists[p.name] = FloatDistribution(p.low, p.high)
    return dists


def constraint_violations(metrics: Metrics, constraints: Constraints) -> dict[str, float]:
    """Constraint values in Optuna's convention: <= 0 is satisfied, > 0 by how much it is not."""
    return {
        "min_trades": float(constraints.min_trades - metrics.n_trades),
        "max_drawdown_pct": metrics.max_drawdown_pct - constraints.max_drawdown_pct,
        "min_win_rate_pct": constraints.min_win_rate_pct - metrics.win_rate_pct,
    }


def is_feasible(metrics: Metrics, constraints: Constraints) -> bool:
    """True when every constraint holds."""
    return all(v <= 0.0 for v in constraint_violations(metrics, constraints).values())


def _record(trial: FrozenTrial) -> TrialRecord:
    constraints = trial.constraints
    return TrialRecord(
        number=trial.number,
        params=dict(trial.params),
        metrics={k: float(v) for k, v in trial.user_attrs.get("metrics", {}).items()},
        feasible=all(v <= 0.0 for v in constraints.values()),
    )


def _clip_to_space(params: Params, dists: Mapping[str, BaseDistribution]) -> dict[str, ParamValue]:
    out: dict[str, ParamValue] = {}
    for name, dist in dists.items():
        if name not in params:
            continue
        value = params[name]
        if isinstance(dist, CategoricalDistribution):
            if value in dist.choices:
                out[name] = value
        elif isinstance(dist, IntDistribution | FloatDistribution):
            clipped = min(max(float(value), dist.low), dist.high)
            out[name] = round(clipped) if isinstance(dist, IntDistribution) else clipped
    return out


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler called ``name``: ``tpe`` (multi-objective TPE, constant liar so a batch's trials
    spread out) or ``nsga2``; both honour ``set_constraint`` and the seed."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
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
    """
    if config.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {config.batch_size}")
    dists = build_distributions(space)
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
        study.enqueue_trial(_clip_to_space(warm_start, dists), skip_if_exists=True)
    started = time.monotonic()
    reason = "trials"
    while finished < config.n_trials:
        if config.timeout_s is not None and time.monotonic() - started > config.timeout_s:
            reason = "timeout"
            break
        if config.patience is not None and tracker.since_improvement >= config.patience:
            reason = "converged"
            break
        batch = [
            study.ask(dists) for _ in range(min(config.batch_size, config.n_trials - finished))
        ]
        try:
            results = evaluate([t.params for t in batch])
        except Exception:
            for trial in batch:
                study.tell(trial, state=TrialState.FAIL)
            raise
        for trial, metrics in zip(batch, results, strict=True):
            for key, value in constraint_violations(metrics, config.constraints).items():
                trial.set_constraint(key, value)
            trial.set_user_attr("metrics", metrics.as_dict())
            frozen = study.tell(trial, [getattr(metrics, name) for name in OBJECTIVES])
            finished += 1
            record = _record(frozen)
            tracker.add(record)
            if on_trial is not None:
                on_trial(record, finished)
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


@dataclass(frozen=True, slots=True)
class Candidate:
    """A Pareto-front trial scored on the validation period."""

    number: int
    params: Mapping[str, ParamValue]
    train: Mapping[str, float]
    validation: Mapping[str, float]
    validation_feasible: bool


def rank_on_validation(
    outcome: StudyOutcome,
    validate: BatchObjective,
    constraints: Constraints,
    *,
    min_validation_trades: int,
) -> list[Candidate]:
    """Pareto-front trials ordered for selection using the validation period only.

    Feasible-on-validation candidates come first, then by validation Sharpe, then by validation
    win rate. The test period plays no part here.
    """
    by_number = {t.number: t for t in outcome.trials}
    valid_constraints = Constraints(
        min_trades=min_validation_trades,
        max_drawdown_pct=constraints.max_drawdown_pct,
        min_win_rate_pct=constraints.min_win_rate_pct,
    )
    records = [by_number[number] for number in outcome.pareto_numbers]
    candidates: list[Candidate] = []
    for record, metrics in zip(records, validate([r.params for r in records]), strict=True):
        number = record.number
        candidates.append(
            Candidate(
                number=number,
                params=record.params,
                train=record.metrics,
                validation=metrics.as_dict(),
                validation_feasible=is_feasible(metrics, valid_constraints),
            )
        )
    return sorted(
        candidates,
        key=lambda c: (
            not c.validation_feasible,
            -c.validation["sharpe"],
            -c.validation["win_rate_pct"],
            c.number,
        ),
    )
