"""A level with ``robustness: true`` on real bars: walk-forward, DSR, PBO and cost sensitivity."""

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ffe_dagster.config import load_curriculum
from ffe_dagster.core.backtest import Direction
from ffe_dagster.core.curriculum import LevelSpec, Window
from ffe_dagster.core.levels import LevelData, LevelOutcome, holdout_starts, run_level
from ffe_dagster.core.optimize import StudyConfig, open_storage
from ffe_dagster.core.regimes import RegimeConfig, detect_regimes
from ffe_dagster.settings import PACKAGE_DIR


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> LevelOutcome:
    curriculum = load_curriculum(PACKAGE_DIR / "config" / "curriculum.yaml")
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
            Window(s, datetime(2022, 1, 1, tzinfo=UTC), datetime(2023, 12, 31, tzinfo=UTC))
            for s in bars
        ),
        trials={"quick": 24},
        pass_criteria={"min_deflated_sharpe": 0.95, "max_pbo": 0.5},
        promotes=(),
        robustness=True,
    )
    tmp: Path = tmp_path_factory.mktemp("studies")
    return run_level(
        spec,
        curriculum,
        data,
        study=StudyConfig(
            "robust",
            open_storage(f"journal:///{tmp / 's.journal'}"),
            24,
            seed=3,
            constraints=curriculum.constraints,
            batch_size=8,
        ),
        warm_start=None,
        walk_forward_trials=8,
        max_tries=1,
    )


def test_overfitting_statistics_are_probabilities(outcome: LevelOutcome) -> None:
    overfit = outcome.analysis["overfitting"]
    assert 0.0 <= overfit["deflated_sharpe"] <= overfit["probabilistic_sharpe"] <= 1.0
    assert overfit["dsr_trials"] == 24
    assert 0.0 <= overfit["pbo"] <= 1.0
    assert overfit["pbo_trials"] == 24
    assert overfit["pbo_combinations"] == 12870  # C(16, 8)
    # BTC and ETH trade the same hours: each hour is one observation of the portfolio.
    assert overfit["dsr_bars"] == 2 * overfit["dsr_observations"]
    assert outcome.analysis["lookahead"]["truncation"]["passed"]
    names = {c.name for c in outcome.criteria}
    assert names == {"min_deflated_sharpe", "max_pbo"}
    assert outcome.test["deflated_sharpe"] == overfit["deflated_sharpe"]


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
