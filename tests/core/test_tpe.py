"""The split-once TPE sampler draws exactly the parameters Optuna's TPE sampler draws."""

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers._tpe import sampler as optuna_tpe

from ffe_dagster.core.study.tpe import SplitOnceTPESampler

DISTS = {
    "a": FloatDistribution(0.0, 10.0),
    "b": FloatDistribution(0.5, 5.0),
    "c": IntDistribution(5, 50),
    "d": IntDistribution(20, 200, step=5),
    "e": CategoricalDistribution(["fixed", "trailing"]),
}


def _values(params: dict) -> tuple[list[float], list[float]]:
    # Three conflicting objectives and one constraint, so the split has a non-trivial front and
    # infeasible trials (both parts of Optuna's split).
    a, b, c = float(params["a"]), float(params["b"]), float(params["c"])
    sharpe = -((a - 7.0) ** 2) + b
    win = 50.0 - abs(c - 20) + (params["e"] == "fixed")
    drawdown = a * b
    return [sharpe, win, drawdown], [float(params["d"]) - 150.0]


def _run(sampler: optuna.samplers.BaseSampler, n: int, batch: int) -> list[dict]:
    study = optuna.create_study(directions=["maximize", "maximize", "minimize"], sampler=sampler)
    drawn: list[dict] = []
    while len(drawn) < n:
        asked = [study.ask(DISTS) for _ in range(min(batch, n - len(drawn)))]
        for trial in asked:
            values, constraint = _values(trial.params)
            trial.set_constraint("d_above_150", constraint[0])
            study.tell(trial, values)
            drawn.append(dict(trial.params))
    return drawn


@pytest.mark.parametrize("batch", [1, 8])
def test_the_same_seed_draws_the_same_parameters_as_optunas_tpe(batch: int) -> None:
    n = 60  # past the 10 random start-up trials, so 50 trials are TPE's
    ours = _run(SplitOnceTPESampler(seed=3, constant_liar=True), n, batch)
    theirs = _run(optuna.samplers.TPESampler(seed=3, constant_liar=True), n, batch)
    assert ours == theirs
    # and TPE really ran: the draws after the start-up trials are not a copy of the first ones
    assert len({tuple(sorted(p.items())) for p in ours}) == n


def test_one_split_per_trial_instead_of_one_per_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    splits: list[int] = []
    real = optuna_tpe._split_trials

    def counted(*args, **kwargs):  # Optuna's own function, counted
        splits.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(optuna_tpe, "_split_trials", counted)
    _run(SplitOnceTPESampler(seed=3, constant_liar=True), 30, 4)
    # Batches of 4: the first 12 trials are asked with fewer than 10 complete (random start-up),
    # the other 18 by TPE, one split each; Optuna splits once per parameter.
    assert len(splits) == 18
    splits.clear()
    _run(optuna.samplers.TPESampler(seed=3, constant_liar=True), 30, 4)
    assert len(splits) == 18 * len(DISTS)


def test_the_liars_trials_are_read_once_per_trial_not_once_per_parameter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[int] = []
    real = optuna.storages.InMemoryStorage.get_all_trials

    def counted(self, *args, **kwargs):  # Optuna's own storage, its reads counted
        reads.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(optuna.storages.InMemoryStorage, "get_all_trials", counted)
    _run(SplitOnceTPESampler(seed=3, constant_liar=True), 30, 4)
    ours = len(reads)
    reads.clear()
    _run(optuna.samplers.TPESampler(seed=3, constant_liar=True), 30, 4)
    theirs = len(reads)
    # 18 trials are TPE's (see above); the rest of the reads (start-up trials, ask, tell) are
    # the same on both sides, so the difference is Optuna's extra reads: one per parameter but
    # the first, per TPE trial.
    assert theirs - ours == 18 * (len(DISTS) - 1)
