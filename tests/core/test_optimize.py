"""The study runner: seeded, constrained, resumable, warm-started."""

from collections.abc import Sequence
from pathlib import Path

import optuna
import pytest

from ffe_dagster.core.curriculum import Constraints, ParamRange
from ffe_dagster.core.evaluation import Params
from ffe_dagster.core.metrics import Metrics
from ffe_dagster.core.optimize import StudyConfig, rank_on_validation, run_study

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


def _config(storage: str | optuna.storages.BaseStorage, n: int, name: str = "s") -> StudyConfig:
    return StudyConfig(name, storage, n, seed=7, constraints=CONSTRAINTS)


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
    first = run_study(fake_batch, SPACE, _config(url, 6))
    second = run_study(fake_batch, SPACE, _config(url, 10))
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
