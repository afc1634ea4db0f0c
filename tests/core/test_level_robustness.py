"""A level with ``robustness: true`` on real bars: walk-forward, DSR, PBO and cost sensitivity."""

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import optuna
import polars as pl
import pytest
from optuna.storages import BaseStorage

from ffe_dagster.config import load_curriculum
from ffe_dagster.config.settings import PACKAGE_DIR
from ffe_dagster.core.backtest.reference import Direction
from ffe_dagster.core.regimes.detection import RegimeConfig, detect_regimes
from ffe_dagster.core.study.level_robustness import sharpe_importance
from ffe_dagster.core.study.level_specs import LevelSpec, Window
from ffe_dagster.core.study.levels import LevelData, LevelOutcome, holdout_starts, run_level
from ffe_dagster.core.study.optimize import StudyConfig
from ffe_dagster.resources.optuna_storage import open_storage

CHAIN_TRIALS = 100  # trials of the levels before this one (the warm-start chain)
WF_TRIALS = 5


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> BaseStorage:
    tmp: Path = tmp_path_factory.mktemp("studies")
    return open_storage(f"journal:///{tmp / 's.journal'}")


@pytest.fixture(scope="module")
def outcome(storage: BaseStorage) -> LevelOutcome:
    # 2022 trains and validates, 2023 (up to the 30-day hold-out) is the test era.
    curriculum = replace(
        load_curriculum(PACKAGE_DIR / "config" / "curriculum.yaml"),
        test_era_start={"*": datetime(2023, 1, 1, tzinfo=UTC)},
    )
    bars = {
        s: pl.read_parquet(PACKAGE_DIR / "data" / "samples" / f"{s}_1h.parquet").filter(
            pl.col("ts").dt.year().is_between(2022, 2023)
        )
        for s in ("BTC_USDT", "ETH_USDT")
    }
    data = LevelData(
        bars=bars,
        regimes={s: detect_regimes(b, RegimeConfig()) for s, b in bars.items()},
        periods_per_year={s: 24 * 365.0 for s in bars},
        holdout_start=holdout_starts(bars, 30),
    )
    spec = LevelSpec(
        level=4,
        asset="robust",
        name="robust",
        direction=Direction.BOTH,
        windows=tuple(
            Window(s, datetime(2022, 1, 1, tzinfo=UTC), datetime(2022, 12, 31, tzinfo=UTC))
            for s in bars
        ),
        trials={"quick": 24},
        pass_criteria={
            "min_deflated_sharpe": 0.95,
            "max_pbo": 0.5,
            "stress_min_total_return_pct": -5.0,
        },
        promotes=(),
        robustness=True,
    )
    return run_level(
        spec,
        curriculum,
        data,
        study=StudyConfig(
            "robust",
            storage,
            24,
            seed=3,
            constraints=curriculum.constraints,
            batch_size=8,
        ),
        warm_start=None,
        walk_forward_trials=WF_TRIALS,
        max_tries=1,
        chain_trials=CHAIN_TRIALS,
    )


def test_overfitting_statistics_are_probabilities(outcome: LevelOutcome) -> None:
    overfit = outcome.analysis["overfitting"]
    assert 0.0 <= overfit["deflated_sharpe"] <= overfit["probabilistic_sharpe"] <= 1.0
    # every trial that fed the choice: the chain's 100, the study's 24 and the candidates the
    # COLD pick chooses among
    assert overfit["dsr_trials"] == CHAIN_TRIALS + 24 + len(outcome.candidates)
    assert outcome.analysis["trials_tried"] == overfit["dsr_trials"]
    assert outcome.chain_trials == CHAIN_TRIALS + 24  # what the next level's chain counts
    assert 0.0 <= overfit["pbo"] <= 1.0
    assert overfit["pbo_trials"] == 24
    assert overfit["pbo_combinations"] == 12870  # C(16, 8)
    # BTC and ETH trade the same hours: each hour is one observation of the portfolio.
    assert overfit["dsr_bars"] == 2 * overfit["dsr_observations"]
    assert outcome.analysis["lookahead"]["truncation"]["passed"]
    names = {c.name for c in outcome.criteria}
    assert names == {"min_deflated_sharpe", "max_pbo", "stress_min_total_return_pct"}
    assert outcome.test["deflated_sharpe"] == overfit["deflated_sharpe"]


def test_stress_inside_the_training_era_is_not_evaluated(outcome: LevelOutcome) -> None:
    """COVID (2020), LUNA and FTX (2022) all lie before this level's test era (2023): none
    counts, and the stress criterion fails visibly instead of passing on a default."""
    assert outcome.stress == {}
    assert outcome.analysis["stress_in_sample_excluded"] == [
        "covid_crash_2020",
        "ftx_collapse_2022",
        "luna_collapse_2022",
    ]
    assert "stress_worst_total_return_pct" not in outcome.test
    (stress,) = [c for c in outcome.criteria if c.name == "stress_min_total_return_pct"]
    assert not stress.passed and stress.note.startswith("not evaluated (no stress period")
    assert not outcome.passed


def test_the_test_period_is_the_test_era(outcome: LevelOutcome) -> None:
    test = outcome.analysis["test_segments"]
    assert {row[0] for row in test} == {"BTC_USDT", "ETH_USDT"}
    assert all(row[1] >= "2023-01-01" for row in test)
    assert all(seg[2] < "2023-01-01" for seg in outcome.segments)  # train/validation: 2022


def test_walk_forward_uses_the_configured_trial_count(
    outcome: LevelOutcome, storage: BaseStorage
) -> None:
    for k in range(1, 5):
        study = optuna.load_study(study_name=f"robust-wf{k}", storage=storage)
        assert len(study.trials) == WF_TRIALS


def test_walk_forward_windows_roll_forward_and_stitch(outcome: LevelOutcome) -> None:
    wf = outcome.analysis["walk_forward"]
    windows = wf["windows"]
    assert [w["window"] for w in windows] == [1, 2, 3, 4]
    # Each window trains on 3 parts and tests on 1 (train fraction 0.75), per instrument.
    for w in windows:
        assert w["train_bars"] == pytest.approx(3 * w["test_bars"], rel=0.01)
    assert wf["stitched_oos_bars"] == sum(w["test_bars"] for w in windows)
    assert np.isfinite(wf["walk_forward_efficiency"])
    assert np.isfinite(wf["stitched_oos_sharpe"])


def test_costs_only_ever_lower_the_test_return(outcome: LevelOutcome) -> None:
    """Signals and stop levels do not depend on costs, so the trades are the same and each
    extra cost lowers the return: monotone in fees at every slippage, and vice versa."""
    rows = outcome.analysis["cost_sensitivity"]
    assert len(rows) == 15
    table = {(r["fee_pct"], r["slippage_pct"]): r["total_return_pct"] for r in rows}
    fees = sorted({f for f, _ in table})
    slips = sorted({s for _, s in table})
    assert fees == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    for s in slips:
        returns = [table[(f, s)] for f in fees]
        assert returns == sorted(returns, reverse=True)
        assert returns[0] > returns[-1]
    for f in fees:
        returns = [table[(f, s)] for s in slips]
        assert returns == sorted(returns, reverse=True)


def test_importance_covers_the_searched_parameters(outcome: LevelOutcome) -> None:
    importance = outcome.analysis["importance"]
    assert set(importance) <= {
        p.name for p in load_curriculum(PACKAGE_DIR / "config" / "curriculum.yaml").parameters
    }
    assert sum(importance.values()) == pytest.approx(1.0)
    assert all(-1.0 <= v <= 1.0 for v in outcome.analysis["sensitivity"].values())


def test_the_chosen_set_is_rerun_through_vectorbt(outcome: LevelOutcome) -> None:
    assert outcome.analysis["vectorbt_check"]["max_relative_difference"] <= 1e-9
    trades = outcome.chosen_trades
    equity = outcome.chosen_equity
    assert trades is not None and equity is not None
    assert trades.height == outcome.analysis["vectorbt_check"]["trades"] > 0
    assert set(trades["instrument"].unique()) <= {"BTC_USDT", "ETH_USDT"}
    assert (trades["exit_ts"] >= trades["entry_ts"]).all()
    assert equity.columns == ["instrument", "ts", "equity", "drawdown_pct"]
    assert equity["drawdown_pct"].min() == 0.0  # at every peak


def test_importance_ranks_what_reaches_a_high_sharpe_not_a_low_one() -> None:
    # Sharpe is high only where x > 0.9; below that, z alone orders the trials. What reaches
    # the top Sharpe is x; what reaches the bottom is z (the answer before the sign was fixed).
    study = optuna.create_study(
        directions=["maximize", "maximize", "minimize"],
        sampler=optuna.samplers.RandomSampler(seed=7),
    )

    def objective(trial: optuna.Trial) -> tuple[float, float, float]:
        x, z = trial.suggest_float("x", 0.0, 1.0), trial.suggest_float("z", 0.0, 1.0)
        return 10.0 * (x > 0.9) + z, 50.0, 1.0

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=300)
    importance = sharpe_importance(study)
    assert set(importance) == {"x", "z"}
    assert importance["x"] > 0.8 > importance["z"]
