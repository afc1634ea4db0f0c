"""The study runner: seeded, constrained, resumable (even after a kill), warm-started, stopped
early when the Pareto front stalls or time runs out."""

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from ffe_dagster.core.backtest.metrics import Metrics
from ffe_dagster.core.study.evaluation import Params
from ffe_dagster.core.study.level_specs import Constraints, ParamRange
from ffe_dagster.core.study.optimize import (
    ParetoTracker,
    StudyConfig,
    TrialRecord,
    run_study,
)
from ffe_dagster.core.study.selection import rank_on_validation
from ffe_dagster.resources.optuna_storage import open_storage

REPO = Path(__file__).resolve().parents[2]

SPACE = (
    ParamRange("x", 0.0, 10.0),
    ParamRange("n", 1, 20, step=1),
    ParamRange("m", choices=("a", "b")),
)
CONSTRAINTS = Constraints(min_trades=10, max_drawdown_pct=20.0, min_win_rate_pct=40.0)


def fake_metrics(params: Params) -> Metrics:
    """A deterministic objective: Sharpe peaks at x = 7; n sets the number of trades."""
    x = float(params["x"])
    return Metrics(
        sharpe=-((x - 7.0) ** 2),
        sortino=0.0,
        max_drawdown_pct=x,
        win_rate_pct=50.0,
        profit_factor=1.0,
        total_return_pct=1.0,
        n_trades=int(params["n"]),
        avg_trade_bars=1.0,
        exposure_pct=1.0,
    )


def fake_batch(batch: Sequence[Params]) -> list[Metrics]:
    return [fake_metrics(p) for p in batch]


def _config(
    storage: optuna.storages.BaseStorage,
    n: int,
    name: str = "s",
    *,
    seed: int = 7,
    batch_size: int = 16,
    patience: int | None = None,
    timeout_s: float | None = None,
) -> StudyConfig:
    return StudyConfig(
        name,
        storage,
        n,
        seed=seed,
        constraints=CONSTRAINTS,
        batch_size=batch_size,
        patience=patience,
        timeout_s=timeout_s,
    )


def _params(trials: Sequence[TrialRecord]) -> list[dict[str, object]]:
    return [dict(t.params) for t in trials]


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_constraints_are_stored_where_optuna_reads_them(kind: str, tmp_path: Path) -> None:
    """The runner writes the constraints without ``Trial.set_constraint``: Optuna must still
    read them as each trial's constraints, and its feasible Pareto front must skip the rest."""
    url = f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite" else f"journal:///{tmp_path / 'j'}"
    run_study(fake_batch, SPACE, _config(open_storage(url, heartbeat_interval=None), 30))
    study = optuna.load_study(study_name="s", storage=open_storage(url, heartbeat_interval=None))
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 30
    for t in trials:
        x, n = float(t.params["x"]), int(t.params["n"])
        # by hand from fake_metrics: drawdown x, win rate 50, n trades
        assert t.constraints == {
            "min_trades": 10.0 - n,
            "max_drawdown_pct": x - 20.0,
            "min_win_rate_pct": 40.0 - 50.0,
        }
    infeasible = {t.number for t in trials if int(t.params["n"]) < 10}
    assert infeasible  # n < 10 happens in 30 draws
    assert study.best_trials and not {t.number for t in study.best_trials} & infeasible


def test_same_seed_gives_the_same_trials() -> None:
    a = run_study(fake_batch, SPACE, _config(optuna.storages.InMemoryStorage(), 15))
    b = run_study(fake_batch, SPACE, _config(optuna.storages.InMemoryStorage(), 15))
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert a.new_trials == 15 and a.resumed_trials == 0


def test_infeasible_trials_never_reach_the_pareto_front() -> None:
    out = run_study(fake_batch, SPACE, _config(optuna.storages.InMemoryStorage(), 30))
    by_number = {t.number: t for t in out.trials}
    assert out.pareto_numbers
    for number in out.pareto_numbers:
        assert by_number[number].feasible
        assert by_number[number].metrics["n_trades"] >= 10
    assert any(not t.feasible for t in out.trials)  # n < 10 happens in 30 draws


def test_a_study_resumes_from_storage(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    # Two storages over one database file: the second run reads the first's trials from it.
    first = run_study(fake_batch, SPACE, _config(optuna.storages.RDBStorage(url), 6))
    second = run_study(fake_batch, SPACE, _config(optuna.storages.RDBStorage(url), 10))
    assert first.new_trials == 6
    assert second.resumed_trials == 6 and second.new_trials == 4
    assert len(second.trials) == 10
    assert [t.params for t in second.trials[:6]] == [t.params for t in first.trials]


def test_warm_start_is_the_first_trial_and_is_clipped_to_the_space() -> None:
    out = run_study(
        fake_batch,
        SPACE,
        _config(optuna.storages.InMemoryStorage(), 3),
        warm_start={"x": 42.0, "n": 12, "m": "b"},
    )
    assert out.trials[0].params == {"x": 10.0, "n": 12, "m": "b"}


def test_an_objective_error_fails_the_trial_and_propagates() -> None:
    storage = optuna.storages.InMemoryStorage()

    def broken(_: Sequence[Params]) -> list[Metrics]:
        raise RuntimeError("backtest exploded")

    with pytest.raises(RuntimeError, match="exploded"):
        run_study(broken, SPACE, _config(storage, 3))
    study = optuna.load_study(study_name="s", storage=storage)
    # The whole batch (all 3 trials) was asked, so all 3 are marked failed, none left running.
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 3


def test_ranking_uses_validation_only() -> None:
    out = run_study(fake_batch, SPACE, _config(optuna.storages.InMemoryStorage(), 25))

    def validate(batch: Sequence[Params]) -> list[Metrics]:  # prefers small x, unlike train
        return [
            Metrics(**{**fake_metrics(p).as_dict(), "sharpe": -float(p["x"]), "n_trades": 20})  # type: ignore[arg-type]
            for p in batch
        ]

    ranked = rank_on_validation(out, validate, CONSTRAINTS, min_validation_trades=5)
    sharpes = [c.validation["sharpe"] for c in ranked]
    assert sharpes == sorted(sharpes, reverse=True)
    assert {c.number for c in ranked} == set(out.pareto_numbers)


@pytest.mark.parametrize("batch_size", [4, 1])
def test_a_fixed_seed_repeats_its_trials_at_a_batch_size(batch_size: int) -> None:
    def run(seed: int) -> list[dict[str, object]]:
        storage = optuna.storages.InMemoryStorage()
        out = run_study(fake_batch, SPACE, _config(storage, 24, seed=seed, batch_size=batch_size))
        assert len(out.trials) == 24  # past TPE's 10 random start-up trials
        return _params(out.trials)

    first = run(7)
    assert run(7) == first
    assert run(8) != first  # the seed really drives the sampler


FLAT = Metrics(
    sharpe=1.0,
    sortino=1.0,
    max_drawdown_pct=5.0,
    win_rate_pct=50.0,
    profit_factor=1.5,
    total_return_pct=3.0,
    n_trades=20,
    avg_trade_bars=4.0,
    exposure_pct=10.0,
)


def flat_batch(batch: Sequence[Params]) -> list[Metrics]:
    """Every trial scores the same feasible metrics: the front is full after the first one."""
    return [FLAT for _ in batch]


@pytest.mark.parametrize(("batch_size", "expected"), [(1, 6), (4, 8)])
def test_a_stalled_front_stops_the_study_early(batch_size: int, expected: int) -> None:
    # Trial 0 joins the empty front; each later trial ties with it, so it does not improve the
    # front. Patience is checked before each batch: with batches of 1 the study stops after
    # trial 5 (5 trials without improvement); with batches of 4, after 4 (3 without) it goes on
    # and after 8 (7 without) it stops.
    storage = optuna.storages.InMemoryStorage()
    out = run_study(flat_batch, SPACE, _config(storage, 50, batch_size=batch_size, patience=5))
    assert out.stop_reason == "converged"
    assert out.new_trials == len(out.trials) == expected


def test_an_improving_front_runs_to_the_trial_count() -> None:
    scored = 0

    def improving(batch: Sequence[Params]) -> list[Metrics]:
        nonlocal scored
        out = []
        for _ in batch:  # each trial beats every earlier one on Sharpe
            scored += 1
            out.append(dataclasses.replace(FLAT, sharpe=float(scored)))
        return out

    storage = optuna.storages.InMemoryStorage()
    out = run_study(improving, SPACE, _config(storage, 12, batch_size=2, patience=2))
    assert out.stop_reason == "trials"
    assert out.new_trials == 12
    assert out.pareto_numbers == (11,)


def _record(
    number: int, sharpe: float, win: float, dd: float, feasible: bool = True
) -> TrialRecord:
    metrics: Mapping[str, float] = {"sharpe": sharpe, "win_rate_pct": win, "max_drawdown_pct": dd}
    return TrialRecord(number=number, params={}, metrics=metrics, feasible=feasible)


def test_pareto_tracker_keeps_the_feasible_non_dominated_points() -> None:
    tracker = ParetoTracker(front=[])
    assert tracker.add(_record(0, sharpe=1.0, win=50.0, dd=10.0))
    # Worse Sharpe and deeper drawdown, same win rate: dominated, does not join.
    assert not tracker.add(_record(1, sharpe=0.5, win=50.0, dd=12.0))
    # Better on everything but infeasible: never joins.
    assert not tracker.add(_record(2, sharpe=9.0, win=90.0, dd=1.0, feasible=False))
    assert tracker.since_improvement == 2
    assert tracker.front == [(1.0, 50.0, -10.0)]  # drawdown is minimized: stored negated
    # A trade-off (better Sharpe, worse win rate) joins beside the first point.
    assert tracker.add(_record(3, sharpe=2.0, win=40.0, dd=10.0))
    assert tracker.since_improvement == 0
    assert sorted(tracker.front) == [(1.0, 50.0, -10.0), (2.0, 40.0, -10.0)]
    # An exact tie with a front point does not improve the front.
    assert not tracker.add(_record(4, sharpe=2.0, win=40.0, dd=10.0))
    # Only a shallower drawdown than the trade-off point: it evicts that point alone.
    assert tracker.add(_record(5, sharpe=2.0, win=40.0, dd=8.0))
    assert sorted(tracker.front) == [(1.0, 50.0, -10.0), (2.0, 40.0, -8.0)]
    # A point better on every objective evicts the whole front.
    assert tracker.add(_record(6, sharpe=3.0, win=60.0, dd=5.0))
    assert tracker.front == [(3.0, 60.0, -5.0)]


def test_a_time_limit_stops_after_the_batch_that_overran_it() -> None:
    def slow(batch: Sequence[Params]) -> list[Metrics]:
        time.sleep(0.2)
        return fake_batch(batch)

    # The limit is checked before each batch: at 0 s the first batch starts, at ~0.2 s the
    # 0.05 s limit has passed, so exactly one batch of 4 runs.
    storage = optuna.storages.InMemoryStorage()
    out = run_study(slow, SPACE, _config(storage, 100, batch_size=4, timeout_s=0.05))
    assert out.stop_reason == "timeout"
    assert out.new_trials == len(out.trials) == 4


def test_a_zero_time_limit_runs_at_most_one_batch() -> None:
    storage = optuna.storages.InMemoryStorage()
    out = run_study(fake_batch, SPACE, _config(storage, 100, batch_size=4, timeout_s=0.0))
    assert out.stop_reason == "timeout"
    assert out.new_trials in (0, 4)
    study = optuna.load_study(study_name="s", storage=storage)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)  # nothing left running


# Runs in a child process, from the repository root so ``tests`` is importable.
KILL_SCRIPT = """
import os, signal, sys
from ffe_dagster.core.study.optimize import StudyConfig, run_study
from ffe_dagster.resources.optuna_storage import open_storage
from tests.core.test_optimize import CONSTRAINTS, SPACE, fake_batch

def kill_at_40(record, finished):
    if finished == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)

config = StudyConfig(
    "killed", open_storage(sys.argv[1]), 100, seed=7, constraints=CONSTRAINTS, batch_size=8
)
run_study(fake_batch, SPACE, config, on_trial=kill_at_40)
"""


def _run_and_kill(url: str, at: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}  # NUMBA_CACHE_DIR as in this process
    return subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, url, str(at)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_study_killed_after_40_trials_continues_from_40(tmp_path: Path) -> None:
    url = "journal:///" + str(tmp_path / "s.journal")
    child = _run_and_kill(url, 40)
    assert child.returncode == -signal.SIGKILL, child.stderr

    before = optuna.load_study(study_name="killed", storage=open_storage(url))
    held = before.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert len(held) == 40
    assert len(before.trials) == 40  # killed between batches: no trial left running
    held_params = [dict(t.params) for t in held]

    config = StudyConfig(
        "killed", open_storage(url), 60, seed=7, constraints=CONSTRAINTS, batch_size=8
    )
    out = run_study(fake_batch, SPACE, config)
    assert out.resumed_trials == 40
    assert out.new_trials == 20
    assert len(out.trials) == 60
    assert [t.number for t in out.trials] == list(range(60))
    assert _params(out.trials[:40]) == held_params


def test_a_study_killed_mid_batch_fails_the_orphans_and_still_reaches_its_count(
    tmp_path: Path,
) -> None:
    """Killed at 37 with batches of 8: trials 37-39 were asked but never told."""
    url = "journal:///" + str(tmp_path / "s.journal")
    assert _run_and_kill(url, 37).returncode == -signal.SIGKILL
    before = optuna.load_study(study_name="killed", storage=open_storage(url))
    running = before.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    assert [t.number for t in running] == [37, 38, 39]

    config = StudyConfig(
        "killed", open_storage(url), 60, seed=7, constraints=CONSTRAINTS, batch_size=8
    )
    out = run_study(fake_batch, SPACE, config)
    assert (out.resumed_trials, out.new_trials, len(out.trials)) == (37, 23, 60)
    after = optuna.load_study(study_name="killed", storage=open_storage(url))
    states = {t.number: t.state for t in after.trials}
    assert [n for n, st in states.items() if st == TrialState.FAIL] == [37, 38, 39]
    assert TrialState.RUNNING not in states.values()
