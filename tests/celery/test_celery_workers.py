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

import optuna
from dagster import DagsterEventType, JobExecutionResult
from optuna.trial import FrozenTrial, TrialState

from ffe_dagster.jobs.study_workers import SHARE_ATTR, WORKER_ATTR
from ffe_dagster.local_cluster import run_study_workers
from tests.celery.conftest import Cluster

LEVEL = 1
MORE = 8  # trials each test adds: two workers, two batches of 4 each
WAIT_S = 600  # upper bound for one run on a loaded 2-core machine


def _study_trials(cluster: Cluster) -> list[FrozenTrial]:
    url = cluster.settings.studies_url
    names = optuna.get_all_study_names(url)
    if not names:
        return []
    (name,) = names  # the cluster holds one study: level 1's
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


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
    hosts = {
        str(e.dagster_event.engine_event_data.metadata["Celery worker"].value)  # type: ignore[union-attr]
        for e in cluster.instance.all_logs(result.run_id, of_type=DagsterEventType.ENGINE_EVENT)
        if e.dagster_event is not None
        and "Celery worker" in (e.dagster_event.engine_event_data.metadata or {})
    }
    assert len(hosts) == 2, hosts  # two Celery workers (the plan op ran on one of them)
