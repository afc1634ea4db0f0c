"""What the journal in PostgreSQL (``resources/journal_postgres.py``) promises beyond what the
shared worker tests check on both storages: streams are isolated, a block is written whole or
not at all, a writer that skips the stream's lock is refused, a stored gap is refused on replay,
and a level study's results (values, constraints, user attrs) read back as they were told. All
on a real server, read back through fresh storages (a new process's view)."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from ffe_dagster.config.environment import DATABASE_JOURNAL_PREFIX
from ffe_dagster.config.settings import PROJECT_DIR
from ffe_dagster.core.study.optimize import StudyConfig, run_study
from ffe_dagster.resources.journal_batches import ConcurrentJournalWriteError
from ffe_dagster.resources.journal_postgres import (
    JournalGapError,
    PostgresJournalStorage,
    journal_streams,
)
from ffe_dagster.resources.optuna_storage import CONNECT_TIMEOUT_S, open_storage
from ffe_dagster.resources.studies import OptunaStorageResource
from tests.core.test_optimize import CONSTRAINTS, SPACE, fake_batch

BATCH = 4
# A well-formed journal operation (set a study user attr) as another program might append it.
FOREIGN_LOG = {
    "op_code": 2,
    "worker_id": "another-program",
    "study_id": 0,
    "user_attr": {"written_by": "another program"},
}


def _journal(url: str, stream: str) -> PostgresJournalStorage:
    storage = open_storage(url, stream=stream, heartbeat_interval=None)
    assert isinstance(storage, PostgresJournalStorage)
    return storage


def _config(storage: optuna.storages.BaseStorage, name: str, n: int) -> StudyConfig:
    return StudyConfig(
        study_name=name,
        storage=storage,
        n_trials=n,
        seed=7,
        constraints=CONSTRAINTS,
        batch_size=BATCH,
    )


@pytest.fixture
def journal_url(postgres_url: str) -> str:
    return DATABASE_JOURNAL_PREFIX + postgres_url


def _count(postgres_url: str, stream: str) -> int:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as con:
            return con.execute(
                sa.text("SELECT count(*) FROM ffe_optuna_journal WHERE stream = :s"), {"s": stream}
            ).scalar_one()
    finally:
        engine.dispose()


def test_a_study_reads_back_as_told_and_streams_are_isolated(
    journal_url: str, postgres_url: str
) -> None:
    first = run_study(fake_batch, SPACE, _config(_journal(journal_url, "a"), "level_a", 12))
    # The walk-forward studies of a level share its stream.
    run_study(fake_batch, SPACE, _config(_journal(journal_url, "a"), "level_a-wf1", 8))
    run_study(fake_batch, SPACE, _config(_journal(journal_url, "b"), "level_b", 8))

    fresh_a, fresh_b = _journal(journal_url, "a"), _journal(journal_url, "b")
    assert sorted(optuna.get_all_study_names(fresh_a)) == ["level_a", "level_a-wf1"]
    assert optuna.get_all_study_names(fresh_b) == ["level_b"]
    assert journal_streams(journal_url, CONNECT_TIMEOUT_S) == ["b", "a"]  # newest first

    told = optuna.load_study(study_name="level_a", storage=fresh_a).get_trials(deepcopy=False)
    assert [t.number for t in told] == list(range(12))
    assert {t.state for t in told} == {TrialState.COMPLETE}
    # Parameters, metrics, feasibility (the constraints) and the feasible front, as told.
    read_back = run_study(fake_batch, SPACE, _config(_journal(journal_url, "a"), "level_a", 12))
    assert (read_back.resumed_trials, read_back.new_trials) == (12, 0)
    assert read_back.trials == first.trials
    assert read_back.pareto_numbers == first.pareto_numbers
    assert 0 < sum(t.feasible for t in first.trials) < 12  # both kinds were stored

    # A study resumed from the stream asks only what is missing.
    again = run_study(fake_batch, SPACE, _config(_journal(journal_url, "a"), "level_a", 16))
    assert (again.resumed_trials, again.new_trials) == (12, 4)
    assert _count(postgres_url, "b") < _count(postgres_url, "a")


def test_a_writer_without_the_lock_is_refused_and_writes_nothing(
    journal_url: str, postgres_url: str
) -> None:
    resource = OptunaStorageResource(url=journal_url)
    storage = resource.storage("s")
    assert isinstance(storage, PostgresJournalStorage)
    study = optuna.create_study(study_name="s", storage=storage, directions=["maximize"])
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    before = _count(postgres_url, "s")
    engine = sa.create_engine(postgres_url)
    try:
        with pytest.raises(ConcurrentJournalWriteError, match="resumes from its stored trials"):
            with storage.batch():
                study.ask()
                # Another program appends the next log number without the stream's lock.
                with engine.begin() as con:
                    con.execute(
                        sa.text(
                            "INSERT INTO ffe_optuna_journal (stream, log_number, log) "
                            "VALUES ('s', :n, :log)"
                        ),
                        {"n": before, "log": json.dumps(FOREIGN_LOG)},
                    )
    finally:
        engine.dispose()
    assert storage.broken  # its memory is ahead of the journal: the resource opens a new one
    assert _count(postgres_url, "s") == before + 1  # the foreign row only: the block wrote nothing
    reopened = resource.storage("s")
    assert reopened is not storage
    study = optuna.load_study(study_name="s", storage=reopened)
    assert study.user_attrs == {"written_by": "another program"}
    assert len(study.trials) == 2  # the refused block's ask is not there


def test_a_gap_in_a_stream_is_refused_on_replay(journal_url: str, postgres_url: str) -> None:
    study = optuna.create_study(
        study_name="g", storage=_journal(journal_url, "g"), directions=["maximize"]
    )
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as con:
            con.execute(
                sa.text("DELETE FROM ffe_optuna_journal WHERE stream = 'g' AND log_number = 3")
            )
    finally:
        engine.dispose()
    with pytest.raises(JournalGapError, match="log 3 is missing"):
        _journal(journal_url, "g")


KILLED_IN_BLOCK = """
import os, signal, sys
import optuna
from ffe_dagster.resources.optuna_storage import open_storage

storage = open_storage(sys.argv[1], stream="k", heartbeat_interval=None)
study = optuna.load_study(study_name="k", storage=storage)
with storage.batch():
    for _ in range(4):
        study.ask()
    print("asked", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_process_killed_inside_a_block_writes_nothing_and_drops_its_lock(
    journal_url: str, postgres_url: str
) -> None:
    storage = _journal(journal_url, "k")
    study = optuna.create_study(study_name="k", storage=storage, directions=["maximize"])
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    before = _count(postgres_url, "k")
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_IN_BLOCK, journal_url],
        cwd=PROJECT_DIR,
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL and "asked" in proc.stdout, proc.stderr
    assert _count(postgres_url, "k") == before  # its four asks died with it
    # The server dropped its session lock with its connection: this block does not wait.
    started = time.monotonic()
    with storage.batch():
        study.ask()
    assert time.monotonic() - started < 10
    fresh = optuna.load_study(study_name="k", storage=_journal(journal_url, "k"))
    assert [t.number for t in fresh.get_trials(deepcopy=False)] == [0, 1, 2]
