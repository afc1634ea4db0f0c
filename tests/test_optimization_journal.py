"""The batched journal storage of the level assets: Optuna's journal file, written one block (a
batch's asks, or its tells) at a time, and a study that resumes after a process killed inside a
block, with a real file and real killed processes."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from ffe_dagster.core.study.optimize import StudyConfig, run_study
from ffe_dagster.resources.journal_batches import (
    BatchedJournalStorage,
    ConcurrentJournalWriteError,
)
from ffe_dagster.resources.journal_file import batched_journal_file
from ffe_dagster.resources.optuna_storage import open_storage
from ffe_dagster.resources.studies import OptunaStorageResource
from tests.core.test_optimize import CONSTRAINTS, SPACE, fake_batch, flat_batch

REPO = Path(__file__).resolve().parents[1]


def _config(storage: optuna.storages.BaseStorage, n: int, **kw: object) -> StudyConfig:
    return StudyConfig("s", storage, n, seed=7, constraints=CONSTRAINTS, batch_size=8, **kw)  # type: ignore[arg-type]


def _lines(path: Path) -> int:
    return len(path.read_bytes().splitlines())


def test_a_batched_study_draws_the_same_trials_as_a_plain_journal(tmp_path: Path) -> None:
    plain = run_study(fake_batch, SPACE, _config(open_storage(f"journal:///{tmp_path}/a.j"), 40))
    path = tmp_path / "b.j"
    batched = run_study(fake_batch, SPACE, _config(batched_journal_file(path), 40))
    assert [dict(t.params) for t in batched.trials] == [dict(t.params) for t in plain.trials]
    assert [t.metrics for t in batched.trials] == [t.metrics for t in plain.trials]
    # The file is Optuna's journal: a plain journal storage reads every trial back.
    again = optuna.load_study(study_name="s", storage=open_storage(f"journal:///{path}"))
    states = [t.state for t in again.trials]
    assert states == [TrialState.COMPLETE] * 40
    assert [dict(t.params) for t in again.trials] == [dict(t.params) for t in plain.trials]


def test_a_block_is_written_once_when_it_ends(tmp_path: Path) -> None:
    path = tmp_path / "s.j"
    storage = batched_journal_file(path)
    study = optuna.create_study(study_name="s", storage=storage)
    before = _lines(path)
    with storage.batch():
        trials = [study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}) for _ in range(3)]
        assert _lines(path) == before  # nothing on disk yet
        assert len(study.trials) == 3  # but the study sees its own trials
    written = _lines(path)
    assert written > before + 3  # a trial is several operations
    other = optuna.load_study(study_name="s", storage=open_storage(f"journal:///{path}"))
    assert [t.state for t in other.trials] == [TrialState.RUNNING] * 3
    with storage.batch():
        for trial in trials:
            study.tell(trial, 1.0)
    assert [t.state for t in other.trials] == [TrialState.COMPLETE] * 3


def test_a_foreign_append_inside_a_block_fails_the_block_and_writes_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.j"
    storage = batched_journal_file(path)
    study = optuna.create_study(study_name="s", storage=storage)
    size = grown = path.stat().st_size
    with pytest.raises(ConcurrentJournalWriteError, match="the batch was not written"):
        with storage.batch():
            study.ask()
            # A plain Optuna writer that does not take the batch lock, e.g. a new study.
            optuna.create_study(study_name="other", storage=open_storage(f"journal:///{path}"))
            grown = path.stat().st_size
    assert grown > size and path.stat().st_size == grown  # only the foreign write
    assert storage.broken
    # The resource hands out a fresh storage for that file afterwards.
    resource = OptunaStorageResource(url=f"journal:///{path}")
    fresh = resource.storage("s")
    assert fresh is not storage and fresh is resource.storage("s")
    assert optuna.load_study(study_name="s", storage=fresh).trials == []


# A child process that runs a batched study and is killed inside a block.
KILL_SCRIPT = """
import os, signal, sys
from pathlib import Path
import optuna
from ffe_dagster.core.study.optimize import StudyConfig, run_study
from ffe_dagster.resources.journal_file import batched_journal_file
from tests.core.test_optimize import CONSTRAINTS, SPACE, fake_batch

storage = batched_journal_file(Path(sys.argv[1]))
config = StudyConfig("s", storage, 100, seed=7, constraints=CONSTRAINTS, batch_size=8)
where, at = sys.argv[2], int(sys.argv[3])

def kill_while_telling(record, finished):
    if where == "tell" and finished == at:
        os.kill(os.getpid(), signal.SIGKILL)

def evaluate(batch):
    if where == "evaluate" and len(storage.get_all_trials(0)) > at:
        os.kill(os.getpid(), signal.SIGKILL)
    return fake_batch(batch)

if where == "ask":
    run_study(fake_batch, SPACE, StudyConfig("s", storage, at, seed=7, constraints=CONSTRAINTS,
                                             batch_size=8))
    study = optuna.load_study(study_name="s", storage=storage)
    with storage.batch():
        study.ask()
        study.ask()
        os.kill(os.getpid(), signal.SIGKILL)
run_study(evaluate, SPACE, config, on_trial=kill_while_telling)
"""


def _killed(path: Path, where: str, at: int) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    child = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(path), where, str(at)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr


def _states(path: Path) -> dict[int, TrialState]:
    study = optuna.load_study(study_name="s", storage=open_storage(f"journal:///{path}"))
    return {t.number: t.state for t in study.trials}


@pytest.mark.parametrize(
    ("where", "at", "complete", "running"),
    [
        # Killed after telling trial 37 of the batch 32-39: the block of tells was never written,
        # so the whole batch is RUNNING (asked and stored, never told).
        ("tell", 37, 32, list(range(32, 40))),
        # Killed while evaluating the batch 32-39: the same.
        ("evaluate", 32, 32, list(range(32, 40))),
        # Killed while asking two trials after 24 complete ones: the file holds neither.
        ("ask", 24, 24, []),
    ],
)
def test_a_study_killed_inside_a_block_resumes_and_reaches_its_count(
    tmp_path: Path, where: str, at: int, complete: int, running: list[int]
) -> None:
    path = tmp_path / "s.j"
    _killed(path, where, at)
    states = _states(path)
    assert sum(s == TrialState.COMPLETE for s in states.values()) == complete
    assert [n for n, s in states.items() if s == TrialState.RUNNING] == running
    assert len(states) == complete + len(running)

    # Resumed in this process, through the resource as the level assets get it; the batch lock
    # of the killed process is gone with it, so nothing waits.
    storage = OptunaStorageResource(url=f"journal:///{path}").storage("s")
    assert isinstance(storage, BatchedJournalStorage)
    out = run_study(fake_batch, SPACE, _config(storage, 60))
    assert (out.resumed_trials, out.new_trials, len(out.trials)) == (complete, 60 - complete, 60)
    after = _states(path)
    assert [n for n, s in after.items() if s == TrialState.FAIL] == running
    assert TrialState.RUNNING not in after.values()
    assert sum(s == TrialState.COMPLETE for s in after.values()) == 60


def test_a_converged_study_resumed_with_the_same_target_adds_no_trial(tmp_path: Path) -> None:
    # Every trial ties with the first: with patience 5 and batches of 8 the study stops after 8.
    storage = batched_journal_file(tmp_path / "s.j")
    first = run_study(flat_batch, SPACE, _config(storage, 50, patience=5))
    assert (first.stop_reason, len(first.trials)) == ("converged", 8)
    # Resumed, its patience would start from zero and run 8 more: it is converged already.
    again = run_study(flat_batch, SPACE, _config(storage, 50, patience=5))
    assert (again.stop_reason, again.new_trials, len(again.trials)) == ("converged", 0, 8)
    # A larger target (a repeat of the level) is a new call: it runs until it converges again.
    more = run_study(flat_batch, SPACE, _config(storage, 75, patience=5))
    assert (more.stop_reason, more.new_trials) == ("converged", 8)
