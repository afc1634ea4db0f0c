"""Repeated testing at COLD: each parameter set is judged once, and every COLD test of a regime
uses only bars no earlier COLD test of that regime used (recorded in the registry per regime and
instrument). Real bundled bars of 2022, a real SQLite registry."""

from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from ffe_dagster.core.backtest.reference import CostModel, Direction
from ffe_dagster.core.promotion.config import PromotionRegime, Stage
from ffe_dagster.core.promotion.performance import paper_performance
from ffe_dagster.core.promotion.records import Action, RegimeAction
from ffe_dagster.core.study.selection import Candidate
from ffe_dagster.promotion.state_machine import RegimeCandidates
from ffe_dagster.resources.registry import ParameterRegistryResource
from tests.promotion_cycle_helpers import (
    LOSER,
    PPY,
    STRATEGY,
    T0,
    A,
    B,
    decisions,
    load_history,
    run_cycle,
    upto,
)

FIVE = timedelta(minutes=5)


@pytest.fixture(scope="module")
def history() -> dict[str, pl.DataFrame]:
    return load_history()


def _level4(*sets: dict) -> list[RegimeCandidates]:
    return [
        RegimeCandidates(
            regime=PromotionRegime.DEFAULT,
            level=4,
            direction=Direction.BOTH,
            candidates=[Candidate(i, p, {}, {"sharpe": 2.0}, True) for i, p in enumerate(sets)],
        )
    ]


def test_a_set_judged_at_cold_is_never_judged_again(history, tmp_path: Path) -> None:
    registry = ParameterRegistryResource(url=f"sqlite:///{tmp_path / 'r.db'}")
    # cycle 1: B and LOSER both fail COLD on the bars up to T0 (one version stores the last)
    report = run_cycle(registry, upto(history, T0), T0 + FIVE, "c1", _level4(B, LOSER))
    assert decisions(report) == [("DEFAULT", 1, Stage.COLD, Action.REJECT)]
    assert registry.cold_tested("DEFAULT") == [B, LOSER]
    assert registry.cold_bars_used("DEFAULT") == {"BTC_USDT": T0, "ETH_USDT": T0}
    # 16 days later B would pass COLD on the newest bars (tests/promotion_cycle_helpers.py), but it
    # had its test: neither set is judged again
    t2 = T0 + timedelta(days=16)
    report = run_cycle(registry, upto(history, t2), t2 + FIVE, "c2", _level4(B, LOSER))
    assert decisions(report) == [("DEFAULT", None, Stage.COLD, RegimeAction.SKIP)]
    assert "judged by an earlier cycle" in report.rows[0].reason
    assert len(registry.history("DEFAULT")) == 1


def test_cold_waits_for_bars_no_earlier_cold_test_used(history, tmp_path: Path) -> None:
    registry = ParameterRegistryResource(url=f"sqlite:///{tmp_path / 'r.db'}")
    run_cycle(registry, upto(history, T0), T0 + FIVE, "c1", _level4(LOSER))
    # two days later a new set arrives: only 2 of the 7 days of the shortest COLD window are
    # unused, so COLD waits and stores no version
    t2 = T0 + timedelta(days=2)
    report = run_cycle(registry, upto(history, t2), t2 + FIVE, "c2", _level4(A))
    assert decisions(report) == [("DEFAULT", None, Stage.COLD, RegimeAction.WAIT)]
    (noted,) = registry.regime_decisions("DEFAULT")
    assert noted.action is RegimeAction.WAIT and noted.run_id == "c2"
    assert noted.reason == (
        "waits for bars no earlier COLD test used: BTC_USDT has 2.0 of 7 days after "
        "2022-11-01 00:00; ETH_USDT has 2.0 of 7 days after 2022-11-01 00:00"
    )
    assert len(registry.history("DEFAULT")) == 1


def test_a_later_cold_test_starts_after_the_bars_earlier_ones_used(history, tmp_path) -> None:
    registry = ParameterRegistryResource(url=f"sqlite:///{tmp_path / 'r.db'}")
    run_cycle(registry, upto(history, T0), T0 + FIVE, "c1", _level4(LOSER))
    t2 = T0 + timedelta(days=16)
    bars = upto(history, t2)
    report = run_cycle(registry, bars, t2 + FIVE, "c2", _level4(A))
    (row,) = [r for r in report.rows if r.stage == Stage.COLD]
    version = registry.version("DEFAULT", 2)
    days = int(version.metrics["window_days"])
    # worked by hand: the window of `days` days back from t2, cut at T0 (the last bar cycle 1
    # used) when it reaches further back than that
    since = {k: max(t2 - timedelta(days=days), T0) for k in bars}
    expected = paper_performance(
        bars,
        A,
        since=since,
        strategy=STRATEGY,
        direction=Direction.BOTH,
        costs=CostModel(),
        periods_per_year=PPY,
        warmup_bars=400,
    )
    assert version.metrics["n_trades"] == expected.n_trades
    assert version.metrics["sharpe"] == pytest.approx(expected.sharpe, rel=1e-12)
    assert row.version == 2
    assert registry.cold_bars_used("DEFAULT") == {"BTC_USDT": t2, "ETH_USDT": t2}
    if days == 30:
        assert since == {"BTC_USDT": T0, "ETH_USDT": T0}  # the 30-day window was cut at T0
