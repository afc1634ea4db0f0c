"""``study_workers_job`` on the Celery executor with real servers (tests/celery/conftest.py): two
Celery workers fill one level's study; a worker process killed by SIGKILL in the middle of a
batch; the broker restarted under a running job. Each test asks for 8 more trials than the study
holds, so it checks its own run whatever the tests before it left."""

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import optuna
import sqlalchemy as sa
from dagster import DagsterEventType, JobExecutionResult
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from ffe_dagster.jobs.study_workers import SHARE_ATTR, WORKER_ATTR
from ffe_dagster.local_cluster import run_study_workers
from ffe_dagster.resources.journal_postgres import database_url, journal_streams, stream_lock_key
from ffe_dagster.resources.optuna_storage import CONNECT_TIMEOUT_S, open_storage
from tests.celery.conftest import BATCH, Cluster

LEVEL = 1
MORE = 8  # trials each test adds: two workers, two batches of 4 each
WAIT_S = 600  # upper bound for one run on a loaded 2-core machine


def _study_storage(cluster: Cluster) -> BaseStorage | None:
    """The journal stream of the cluster's one study (level 1's), None before it exists."""
    url = cluster.settings.studies_url
    streams = journal_streams(url, CONNECT_TIMEOUT_S)
    if not streams:
        return None
    (stream,) = streams
    return open_storage(url, stream=stream, heartbeat_interval=None)


def _study_trials(cluster: Cluster) -> list[FrozenTrial]:
    storage = _study_storage(cluster)
    if storage is None:
        return []
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def _complete(trials: list[FrozenTrial]) -> int:
    return sum(t.state == TrialState.COMPLETE for t in trials)


def _check_nothing_lost(trials: list[FrozenTrial], complete: int) -> None:
    states = Counter(t.state for t in trials)
    assert set(states) <= {TrialState.COMPLETE, TrialState.FAIL}, states
    assert states[TrialState.COMPLETE] == complete
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(numbers)))  # unique, none skipped


def _in_background(action: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=action, daemon=True)
    thread.start()
    return thread


def _run(cluster: Cluster, target: int) -> JobExecutionResult:
    return run_study_workers(cluster.instance, LEVEL, workers=2, trials=target)


def _trials_of_run(trials: list[FrozenTrial], run_id: str) -> list[FrozenTrial]:
    return [t for t in trials if str(t.user_attrs.get(SHARE_ATTR, "")).startswith(run_id)]


def _celery_executions(cluster: Cluster, run_id: str) -> list[dict[str, Any]]:
    """Metadata of the engine events a Celery task logs when it starts a step."""
    out = []
    for e in cluster.instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        meta = e.dagster_event.engine_event_data.metadata if e.dagster_event else None
        if meta and "Celery worker" in meta:
            out.append(dict(meta))
    return out


def test_two_celery_workers_fill_one_study(cluster: Cluster) -> None:
    before = _complete(_study_trials(cluster))
    result = _run(cluster, before + MORE)
    assert result.success
    with result:
        summary = result.output_for_node("summarize_study_workers")
    assert summary["trials"] == before + MORE and summary["new_trials"] == MORE
    trials = _study_trials(cluster)
    _check_nothing_lost(trials, before + MORE)
    mine = _trials_of_run(trials, result.run_id)
    assert len(mine) == MORE and all(t.state == TrialState.COMPLETE for t in mine)
    # Each share ran as a Celery task in a pool process of its own Celery worker.
    processes = Counter(str(t.user_attrs[WORKER_ATTR]) for t in mine)
    assert len(processes) == 2 and set(processes.values()) == {MORE // 2}, processes
    celery_pids = {int(p.rsplit(":", 1)[1]) for p in processes}
    assert os.getpid() not in celery_pids
    # The steps ran in Celery workers: Dagster records which one took each step.
    hosts = {meta["Celery worker"].value for meta in _celery_executions(cluster, result.run_id)}
    assert len(hosts) == 2, hosts  # two Celery workers (the plan op ran on one of them)


def _wait_until_held(
    cluster: Cluster, first_number: int, processes: int, batch: int
) -> dict[str, list[int]]:
    """Wait until ``processes`` worker processes each hold at least ``batch`` RUNNING trials
    (asked and tagged with the process); return their trial numbers by process."""
    deadline = time.monotonic() + WAIT_S
    # One storage for the polls: each read replays only what was appended since the last.
    while (storage := _study_storage(cluster)) is None or not (
        names := optuna.get_all_study_names(storage)
    ):
        assert time.monotonic() < deadline, "no study was created"
        time.sleep(0.2)
    study = optuna.load_study(study_name=names[0], storage=storage)
    while time.monotonic() < deadline:
        held: dict[str, list[int]] = {}
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number >= first_number and WORKER_ATTR in t.user_attrs:
                held.setdefault(str(t.user_attrs[WORKER_ATTR]), []).append(t.number)
        full = {p: n for p, n in held.items() if len(n) >= batch}
        if len(full) >= processes:
            return full
        time.sleep(0.05)
    raise TimeoutError("the workers never held their trials")


def _held_batch(
    cluster: Cluster, first_number: int, timeout_s: float
) -> tuple[str, list[int]] | None:
    """A worker process holding a whole batch of RUNNING trials of this run, with their
    numbers, if one shows within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        held: dict[str, list[int]] = {}
        for t in _study_trials(cluster):
            if t.state == TrialState.RUNNING and t.number >= first_number:
                held.setdefault(str(t.user_attrs.get(WORKER_ATTR)), []).append(t.number)
        for process, numbers in held.items():
            if process != "None" and len(numbers) >= BATCH:
                return process, numbers
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def test_a_celery_worker_killed_mid_batch_its_trials_are_retried(cluster: Cluster) -> None:
    trials = _study_trials(cluster)
    before, first_number = _complete(trials), len(trials)
    killed: dict[str, object] = {}

    def kill_one() -> None:
        # A batch is evaluated in a fraction of a second, too short to catch by polling; so the
        # killer holds the stream's lock, which a worker needs to tell its batch (and to ask the
        # next one), letting it go for a moment at a time. A process holding a whole batch while
        # the lock is held is between evaluating it and telling it: killed there, it dies
        # mid-batch for sure.
        deadline = time.monotonic() + WAIT_S
        while not (streams := journal_streams(cluster.settings.studies_url, CONNECT_TIMEOUT_S)):
            assert time.monotonic() < deadline, "no study was created"
            time.sleep(0.2)
        (stream,) = streams
        key = stream_lock_key(stream)
        engine = sa.create_engine(database_url(cluster.settings.studies_url))
        try:
            with engine.connect() as lock:
                while time.monotonic() < deadline and not killed:
                    lock.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                    try:
                        held = _held_batch(cluster, first_number, timeout_s=0.3)
                        if held is not None:
                            process, numbers = held
                            os.kill(int(process.rsplit(":", 1)[1]), signal.SIGKILL)
                            killed.update(process=process, numbers=numbers)
                    finally:
                        lock.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                        lock.commit()
        finally:
            engine.dispose()

    killer = _in_background(kill_one)
    result = _run(cluster, before + MORE)
    killer.join(timeout=5)
    assert killed, "the worker was never killed"
    # Celery handed the killed process's task back (task_reject_on_worker_lost) and the step ran
    # again; the run succeeded with exactly the trials asked for.
    assert result.success
    trials = _study_trials(cluster)
    _check_nothing_lost(trials, before + MORE)
    by_number = {t.number: t for t in trials}
    lost = [by_number[n] for n in killed["numbers"]]  # type: ignore[union-attr]
    # Its batch was being evaluated when it died: those trials stopped beating and were failed...
    assert lost and [t.state for t in lost] == [TrialState.FAIL] * len(lost)
    # ...and each was retried, with the same parameters, by another process, and completed.
    retries = {t.system_attrs.get("failed_trial"): t for t in trials if t.number >= first_number}
    for trial in lost:
        retry = retries[trial.number]
        assert retry.state == TrialState.COMPLETE
        assert retry.params == trial.params
        assert retry.user_attrs[WORKER_ATTR] != killed["process"]
    # The killed step ran twice: two Celery tasks executed it (Dagster logs each one).
    share = str(lost[0].user_attrs[SHARE_ATTR]).rsplit("/", 1)[1]
    executions = [
        meta
        for meta in _celery_executions(cluster, result.run_id)
        if meta["step_keys"].value == f"run_study_worker[{share}]"
    ]
    assert len(executions) == 2


def test_the_broker_restarted_mid_run_nothing_is_lost(cluster: Cluster) -> None:
    trials = _study_trials(cluster)
    before, first_number = _complete(trials), len(trials)
    restarted: list[float] = []

    def restart_broker() -> None:
        # As soon as a step works on a trial of this run: waiting for both steps at once raced
        # with a quiet machine, where a share's two batches can finish between two polls.
        _wait_until_held(cluster, first_number, 1, 1)
        cluster.broker.restart(down_s=2.0)
        restarted.append(time.monotonic())

    restarter = _in_background(restart_broker)
    result = _run(cluster, before + MORE)
    restarter.join(timeout=60)
    assert restarted, "the broker was never restarted"
    if not result.success:
        # A clear error naming the broker connection; then a re-run completes the study.
        failures = cluster.instance.all_logs(result.run_id, of_type=DagsterEventType.RUN_FAILURE)
        assert failures and "onnect" in str(failures[-1].message), failures
        rerun = _run(cluster, before + MORE)
        assert rerun.success
    _check_nothing_lost(_study_trials(cluster), before + MORE)
