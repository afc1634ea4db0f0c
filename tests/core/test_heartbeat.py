"""Batch heartbeats on a real SQLite RDB storage: a beating batch is never failed as stale, a batch
that stopped beating is failed and retried with the same parameters, and ``run_study`` picks the
retries up and still ends at its trial count. SQLite's clock has one-second resolution, so the
grace periods here are whole seconds with a second of slack."""

import time
from collections.abc import Sequence
from pathlib import Path

import optuna
import pytest
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from ffe_dagster.core.backtest.metrics import Metrics
from ffe_dagster.core.study.evaluation import Params
from ffe_dagster.core.study.heartbeat import (
    BatchHeartbeat,
    fail_stale_trials,
    heartbeat_storage,
    quiet_heartbeat_warnings,
)
from ffe_dagster.core.study.optimize import DIRECTIONS, StudyConfig, run_study
from ffe_dagster.core.study.search_space import build_distributions
from ffe_dagster.resources.optuna_storage import open_storage
from tests.core.test_optimize import CONSTRAINTS, SPACE, fake_batch


def _sqlite(tmp_path: Path, grace_period: int) -> RDBStorage:
    storage = open_storage(
        f"sqlite:///{tmp_path / 'studies.db'}", heartbeat_interval=1, grace_period=grace_period
    )
    assert isinstance(storage, RDBStorage)
    return storage


def _retried(trial: FrozenTrial) -> int | None:
    with quiet_heartbeat_warnings():  # experimental in Optuna
        return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


def _states(study: optuna.Study) -> list[TrialState]:
    return [t.state for t in study.get_trials(deepcopy=False)]


def test_heartbeat_storage_only_for_sql_storages_with_an_interval(tmp_path: Path) -> None:
    assert heartbeat_storage(_sqlite(tmp_path, 2)) is not None
    assert heartbeat_storage(open_storage(f"journal:///{tmp_path / 's.journal'}")) is None
    assert heartbeat_storage(optuna.storages.InMemoryStorage()) is None
    assert heartbeat_storage(f"sqlite:///{tmp_path / 'studies.db'}") is None
    no_beat = open_storage(f"sqlite:///{tmp_path / 'other.db'}", heartbeat_interval=None)
    assert heartbeat_storage(no_beat) is None
    with pytest.raises(ValueError, match="heartbeat"):
        BatchHeartbeat(no_beat, [0])  # type: ignore[arg-type]  # what a caller must not do


def test_a_beating_batch_stays_running_and_a_silent_one_is_failed_and_retried(
    tmp_path: Path,
) -> None:
    storage = _sqlite(tmp_path, grace_period=2)
    study = optuna.create_study(study_name="hb", storage=storage)
    dists = build_distributions(SPACE)
    with quiet_heartbeat_warnings():
        batch = [study.ask(dists) for _ in range(3)]
    with BatchHeartbeat(storage, [t._trial_id for t in batch]) as beating:
        time.sleep(3.5)  # longer than the grace period: only the heartbeats keep the batch alive
        fail_stale_trials(study)
        assert _states(study) == [TrialState.RUNNING] * 3
        assert beating.running and beating.beats >= 3
    assert not beating.running

    time.sleep(3.5)  # now silent for longer than the grace period, as if its worker was killed
    fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    assert _states(study) == [TrialState.FAIL] * 3 + [TrialState.WAITING] * 3
    retries = {_retried(t): t for t in trials[3:]}
    assert sorted(n for n in retries if n is not None) == [0, 1, 2]
    assert all(retries[t.number].params == t.params for t in trials[:3])


def test_run_study_retries_a_dead_workers_trial_and_stops_at_its_count(tmp_path: Path) -> None:
    storage = _sqlite(tmp_path, grace_period=1)
    study = optuna.create_study(study_name="s", storage=storage, directions=list(DIRECTIONS))
    with quiet_heartbeat_warnings():
        orphan = study.ask(build_distributions(SPACE))  # a worker asked it, beat once, then died
    storage.record_heartbeat(orphan._trial_id)
    time.sleep(2.5)

    config = StudyConfig(
        "s", storage, 6, seed=3, constraints=CONSTRAINTS, batch_size=4, fail_stale_running=False
    )
    out = run_study(fake_batch, SPACE, config)
    assert (out.resumed_trials, out.new_trials, len(out.trials)) == (0, 6, 6)
    trials = optuna.load_study(study_name="s", storage=storage).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL] + [TrialState.COMPLETE] * 6
    retry = trials[1]  # the queued retry is asked before any new trial
    assert _retried(retry) == 0
    assert retry.params == trials[0].params


def test_a_trial_failed_by_another_worker_while_evaluated_is_not_counted() -> None:
    storage = optuna.storages.InMemoryStorage()
    other_worker = [True]

    def evaluate(batch: Sequence[Params]) -> Sequence[Metrics]:
        if other_worker[0]:
            # Another worker found this batch's heartbeats late and failed its first trial.
            other_worker[0] = False
            optuna.load_study(study_name="s", storage=storage).tell(0, state=TrialState.FAIL)
        return fake_batch(batch)

    config = StudyConfig("s", storage, 8, seed=3, constraints=CONSTRAINTS, batch_size=4)
    out = run_study(evaluate, SPACE, config)
    assert (out.new_trials, len(out.trials)) == (8, 8)
    states = [t.state for t in optuna.load_study(study_name="s", storage=storage).trials]
    assert states == [TrialState.FAIL] + [TrialState.COMPLETE] * 8
