"""Worker faults on PostgreSQL, through the project's own ``run_study`` and ``open_storage``, with
real worker processes and nothing mocked: a worker killed by SIGKILL in the middle of a batch (its
trials are failed through heartbeat expiry and retried by the worker that survives), and the
database restarted under a running study (the worker stops with a clear error, a re-run
completes the study). Either way nothing is lost: every trial number is unique, nothing stays
RUNNING, and the study ends with exactly the trials it was asked for. Each runs on the journal in
PostgreSQL (production's storage) and on Optuna's RDB storage."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url

from ffe_dagster.config.settings import PROJECT_DIR
from ffe_dagster.core.study.heartbeat import quiet_heartbeat_warnings
from ffe_dagster.core.study.optimize import DIRECTIONS
from ffe_dagster.local_postgres import PostgresServer
from ffe_dagster.resources.journal_postgres import PostgresJournalStorage, database_url
from ffe_dagster.resources.optuna_storage import open_storage

HEARTBEAT_S = 1
GRACE_S = 3
BATCH = 4
# Generous: a loaded 2-core machine can take many seconds just to start a worker's interpreter.
PATIENCE_S = 180

# Each worker runs this. The objective is cheap and deterministic and writes the worker's id into
# ``exposure_pct`` (stored in the trial's user attr "metrics"), so the storage says which process
# told each trial. In batch number ``pause_batch`` the worker writes that batch's parameters to
# ``marker`` and then either sleeps until it is killed (no ``go``) or waits for the file ``go``:
# the test acts while the worker is known to be inside that batch, with its trials RUNNING.
WORKER = """
import json, sys, time
from pathlib import Path
from ffe_dagster.core.study.level_specs import Constraints, ParamRange
from ffe_dagster.core.backtest.metrics import Metrics
from ffe_dagster.core.study.optimize import StudyConfig, run_study
from ffe_dagster.resources.journal_postgres import PostgresJournalStorage, database_url
from ffe_dagster.resources.optuna_storage import open_storage

args = json.loads(sys.argv[1])
batches = [0]

def evaluate(batch):
    if batches[0] == args["pause_batch"]:
        marker = Path(args["marker"])
        marker.with_suffix(".tmp").write_text(json.dumps([dict(p) for p in batch]))
        marker.with_suffix(".tmp").rename(marker)
        if args["go"] is None:
            time.sleep(600)
        deadline = time.monotonic() + args["patience"]
        while not Path(args["go"]).exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the test never said go")
            time.sleep(0.05)
    batches[0] += 1
    return [
        Metrics(
            sharpe=-((p["x"] - 1.0) ** 2),
            sortino=0.0,
            max_drawdown_pct=abs(p["x"]),
            win_rate_pct=50.0 + p["y"],
            profit_factor=1.0,
            total_return_pct=0.0,
            n_trades=100,
            avg_trade_bars=1.0,
            exposure_pct=float(args["worker"]),
        )
        for p in batch
    ]

outcome = run_study(
    evaluate,
    [ParamRange("x", -5.0, 5.0), ParamRange("y", 0.0, 10.0, step=1.0)],
    StudyConfig(
        study_name=args["study"],
        storage=open_storage(
            args["url"],
            stream=args["study"],
            heartbeat_interval=args["heartbeat"],
            grace_period=args["grace"],
        ),
        n_trials=args["n_trials"],
        seed=args["worker"],
        constraints=Constraints(min_trades=1, max_drawdown_pct=100.0, min_win_rate_pct=0.0),
        batch_size=args["batch"],
        fail_stale_running=args["fail_stale_running"],
    ),
)
print(json.dumps({"resumed": outcome.resumed_trials, "new": outcome.new_trials}))
"""


def _worker(
    url: str,
    study: str,
    worker: int,
    n_trials: int,
    *,
    marker: Path | None = None,
    pause_batch: int = -1,
    go: Path | None = None,
    fail_stale_running: bool = True,
) -> subprocess.Popen[str]:
    args: dict[str, Any] = {
        "url": url,
        "study": study,
        "worker": worker,
        "n_trials": n_trials,
        "batch": BATCH,
        "heartbeat": HEARTBEAT_S,
        "grace": GRACE_S,
        "marker": str(marker),
        "pause_batch": pause_batch,
        "go": None if go is None else str(go),
        "fail_stale_running": fail_stale_running,
        "patience": PATIENCE_S,
    }
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, json.dumps(args)],
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(marker: Path, proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    """The parameters of the batch the worker paused in, once it is there."""
    deadline = time.monotonic() + PATIENCE_S
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"worker exited ({proc.returncode}): {proc.communicate()[1]}")
        assert time.monotonic() < deadline, "the worker never reached its paused batch"
        time.sleep(0.05)
    return json.loads(marker.read_text())


def _finish(proc: subprocess.Popen[str]) -> dict[str, int]:
    out, err = proc.communicate(timeout=PATIENCE_S)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


def _retried(trial: FrozenTrial) -> int | None:
    with quiet_heartbeat_warnings():  # experimental in Optuna
        return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


def _sql_storage(url: str, study: str) -> RDBStorage | PostgresJournalStorage:
    storage = open_storage(url, stream=study, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
    assert isinstance(storage, RDBStorage | PostgresJournalStorage)
    return storage


def test_a_killed_workers_batch_is_retried_by_the_survivor(
    studies_url: str, tmp_path: Path
) -> None:
    storage = _sql_storage(studies_url, "faults")
    # Created first so the workers do not race on its creation (not what this test is about).
    study = optuna.create_study(study_name="faults", storage=storage, directions=DIRECTIONS)
    go = tmp_path / "go"
    # Both pause in their first batch, before either tells a trial, so both resume from zero.
    victim = _worker(
        studies_url,
        "faults",
        1,
        BATCH,
        marker=tmp_path / "victim",
        pause_batch=0,
        fail_stale_running=False,
    )
    survivor = _worker(
        studies_url,
        "faults",
        2,
        12,
        marker=tmp_path / "survivor",
        pause_batch=0,
        go=go,
        fail_stale_running=False,
    )
    try:
        killed = _wait_for(tmp_path / "victim", victim)
        _wait_for(tmp_path / "survivor", survivor)
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        assert len(running) == 2 * BATCH
        victims = {t._trial_id for t in running if _key(t.params) in map(_key, killed)}
        assert len(victims) == BATCH

        # Longer than the grace period: the victim's trials are stale, while the survivor's,
        # paused just as long, are kept alive by its heartbeat thread.
        time.sleep(GRACE_S + 2 * HEARTBEAT_S)
        assert set(storage._get_stale_trial_ids(study._study_id)) == victims
        go.touch()
        # The survivor fails the stale trials before its next ask and runs their retries first.
        assert _finish(survivor) == {"resumed": 0, "new": 12}
    finally:
        for proc in (victim, survivor):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()

    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(12 + BATCH))  # unique numbers
    assert Counter(t.state for t in trials) == {TrialState.COMPLETE: 12, TrialState.FAIL: BATCH}
    failed = {t.number: t for t in trials if t.state == TrialState.FAIL}
    assert sorted(_key(t.params) for t in failed.values()) == sorted(map(_key, killed))
    retries = {_retried(t): t for t in trials if _retried(t) is not None}
    assert sorted(n for n in retries if n is not None) == sorted(failed)  # each retried once
    for number, retry in retries.items():
        assert retry.state == TrialState.COMPLETE
        assert number is not None and retry.params == failed[number].params
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert {int(t.user_attrs["metrics"]["exposure_pct"]) for t in complete} == {2}


def test_a_database_restart_stops_the_worker_clearly_and_a_rerun_completes(
    postgres_server: PostgresServer, studies_url: str, tmp_path: Path
) -> None:
    n_trials = 12
    storage = _sql_storage(studies_url, "restart")
    study = optuna.create_study(study_name="restart", storage=storage, directions=DIRECTIONS)
    go = tmp_path / "go"
    worker = _worker(
        studies_url, "restart", 1, n_trials, marker=tmp_path / "paused", pause_batch=1, go=go
    )
    try:
        _wait_for(tmp_path / "paused", worker)  # its first batch is told, the second is RUNNING
        before = {
            t.number: dict(t.params)
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        }
        assert sorted(before) == list(range(BATCH))
        postgres_server.stop()
        go.touch()
        _, err = worker.communicate(timeout=PATIENCE_S)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
        # The server is shared by the whole session: whatever happened, it runs again.
        postgres_server.start()

    assert worker.returncode != 0
    assert "StorageUnavailableError: Optuna storage unreachable" in err
    database = make_url(database_url(studies_url)).database
    assert f"database '{database}' on {postgres_server.host}:{postgres_server.port}" in err
    assert "resumes from the stored trials" in err
    assert postgres_server.password not in err

    # The parent's own storage outlived the restart: its pooled connections are pinged first.
    trials = study.get_trials(deepcopy=False)
    assert Counter(t.state for t in trials) == {
        TrialState.COMPLETE: BATCH,
        TrialState.RUNNING: BATCH,
    }
    assert _finish(_worker(studies_url, "restart", 1, n_trials)) == {
        "resumed": BATCH,
        "new": n_trials - BATCH,
    }
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(n_trials + BATCH))
    # The batch cut off by the restart was failed on resume; nothing else was lost or changed.
    assert Counter(t.state for t in trials) == {
        TrialState.COMPLETE: n_trials,
        TrialState.FAIL: BATCH,
    }
    assert {t.number: dict(t.params) for t in trials[:BATCH]} == before
    assert all(t.state == TrialState.COMPLETE for t in trials[:BATCH])
