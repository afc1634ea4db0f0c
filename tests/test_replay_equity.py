"""The replayed system's capital between a regime's sets: a LIMITED set trades
``limited.capital_fraction`` (``promotion.yaml``: 10 %) of an account and the current set the
rest, a current set alone (FULL) all of it; in the system's equity and in the live results the
replay reports for the gates, with a real registry and the real export."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from ffe_dagster.config import load_promotion, load_universe
from ffe_dagster.config.settings import PACKAGE_DIR
from ffe_dagster.core.backtest.reference import INIT_CASH, CostModel, Direction
from ffe_dagster.core.backtest.strategies import get_strategy
from ffe_dagster.core.promotion.config import Stage
from ffe_dagster.core.replay.equity import Trading, capital_shares, trade_period, weighted_pnl
from ffe_dagster.core.study.eras import LevelData
from ffe_dagster.promotion.export import export_current
from ffe_dagster.replay.driver import bundled_history, history_of
from ffe_dagster.replay.replay_cycle import CycleInputs, _live_results, _sets
from ffe_dagster.replay.results import rule_curves
from ffe_dagster.resources.optuna_storage import open_storage
from ffe_dagster.resources.registry import ParameterRegistryResource

UNIVERSE = load_universe(PACKAGE_DIR / "config" / "universe.yaml")
PROMOTION = load_promotion(PACKAGE_DIR / "config" / "promotion.yaml")
T = datetime(2022, 5, 1, tzinfo=UTC)
END = datetime(2022, 6, 1, tzinfo=UTC)
SET_A = {
    "fast_window": 10,
    "slow_window": 29,
    "stop_loss_pct": 4.9,
    "take_profit_pct": 2.8,
    "position_size_pct": 1.0,
    "trailing_stop_pct": 2.0,
    "stop_mode": "fixed",
}
SET_B = {**SET_A, "fast_window": 5, "slow_window": 40, "take_profit_pct": 4.0}


def test_capital_shares_and_weighted_pnl_by_hand() -> None:
    assert PROMOTION.limited.capital_fraction == 0.10  # what promotion.yaml ships
    assert capital_shares(current=True, limited=True, fraction=0.1) == (0.9, 0.1)
    assert capital_shares(current=True, limited=False, fraction=0.1) == (1.0, 0.0)
    assert capital_shares(current=False, limited=True, fraction=0.1) == (0.0, 0.1)
    with pytest.raises(ValueError, match="capital fraction"):
        capital_shares(current=True, limited=True, fraction=0.0)
    # 0.9 * 100 + 0.1 * 20 = 92 on d1; 0.9 * -50 = -45 on d2; 0.1 * 30 = 3 on d3
    pnl = weighted_pnl([({"d1": 100.0, "d2": -50.0}, 0.9), ({"d1": 20.0, "d3": 30.0}, 0.1)])
    assert pnl == pytest.approx({"d1": 92.0, "d2": -45.0, "d3": 3.0})


@pytest.fixture(scope="module")
def btc() -> LevelData:
    whole = bundled_history(UNIVERSE, PACKAGE_DIR / "data" / "samples")
    return history_of({"BTC_USDT": whole.bars["BTC_USDT"]}, UNIVERSE)


def _registry(folder: Path, *, limited: bool) -> ParameterRegistryResource:
    """DEFAULT v1 (SET_A) current since 2022-04-01; with ``limited``, v2 (SET_B) at LIMITED."""
    registry = ParameterRegistryResource(url=f"sqlite:///{folder / 'registry.db'}")
    at = datetime(2022, 4, 1, tzinfo=UTC)
    common: dict[str, Any] = {"trigger": "schedule", "run_id": "r", "checks": ()}
    for version, params in ((1, SET_A), (2, SET_B)):
        if version == 2 and not limited:
            break
        number = registry.add_candidate(
            regime="DEFAULT", level=3, direction="long", params=params,
            metrics={"sharpe": 1.0}, passed=True, reason="cold", data_marks={},
            source_run_id=None, candidate_number=version, at=at, **common,
        )  # fmt: skip
        assert number == version
        stages = (Stage.LIMITED, Stage.FULL) if version == 1 else (Stage.LIMITED,)
        for stage in stages:
            registry.advance(
                regime="DEFAULT", version=version, to_stage=stage, reason=str(stage),
                metrics={}, at=at, **common,
            )  # fmt: skip
    return registry


def _trading(data: LevelData) -> Trading:
    return Trading(get_strategy("sma_crossover"), CostModel(fee_pct=0.1), data.periods_per_year)


def _system(registry: ParameterRegistryResource, folder: Path) -> dict[str, Any]:
    payload = export_current(
        registry, folder / "current.json", "r", PROMOTION.limited, (), {"BTC_USDT": None}
    )
    return _sets(payload, {3: Direction.LONG}, PROMOTION.limited.capital_fraction)


def _pnl(data: LevelData, params: dict[str, Any]) -> dict[str, float]:
    frame = data.bars["BTC_USDT"]
    result = trade_period(
        frame, "BTC_USDT", params, Direction.LONG, _trading(data), start=T, end=END
    )
    return dict(result.daily_pnl)


@pytest.mark.parametrize("limited", [True, False])
def test_the_system_equity_counts_a_limited_set_at_its_capital_share(
    btc: LevelData, tmp_path: Path, limited: bool
) -> None:
    registry = _registry(tmp_path, limited=limited)
    system = _system(registry, tmp_path)
    legs = system["BTC_USDT"]
    expected_legs = [(1, 0.9), (2, 0.1)] if limited else [(1, 1.0)]
    assert [(leg["version"], leg["share"]) for leg in legs] == expected_legs
    assert [leg["stage"] for leg in legs] == (["FULL", "LIMITED"] if limited else ["FULL"])

    record = {"t": T.isoformat(), "system": system, "no_gates": {"BTC_USDT": None}}
    curve = rule_curves([record], btc, _trading(btc), END)["system"]
    a, b = _pnl(btc, SET_A), _pnl(btc, SET_B)
    days = [f"2022-05-{d:02d}" for d in range(1, 32)]
    share_a, share_b = (0.9, 0.1) if limited else (1.0, 0.0)
    expected = [(share_a * a.get(d, 0.0) + share_b * b.get(d, 0.0)) / INIT_CASH for d in days]
    assert curve.returns.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert any(abs(x) > 0 for x in expected)  # the sets traded: the shares were tested
    if limited:
        assert a != b  # two different sets, so the 90/10 mix is not the same as either alone


def test_live_results_report_each_set_with_its_share_of_capital(
    btc: LevelData, tmp_path: Path
) -> None:
    # The current set alone trades the whole account (10,000 USD); with a LIMITED set on trial,
    # the LIMITED set trades 1,000 USD and the current one 9,000 USD.
    data = LevelData(
        bars={"BTC_USDT": btc.bars["BTC_USDT"].filter(pl.col("ts") < END)},
        regimes={},
        periods_per_year=btc.periods_per_year,
        holdout_start={},
    )
    for limited, capitals in ((False, {1: INIT_CASH}), (True, {1: 9000.0, 2: 1000.0})):
        folder = tmp_path / str(limited)
        folder.mkdir()
        inputs = CycleInputs(
            registry=_registry(folder, limited=limited),
            storage=open_storage(f"journal:///{folder / 'studies.journal'}"),
            trial_profile="quick",
            promotion=PROMOTION,
            trading=_trading(btc),
            bar_period=timedelta(hours=1),
            folder=folder,
        )
        live = _live_results(inputs, data, END)
        by_version = {
            int(v): float(c)
            for v, c in live.group_by("version").agg(pl.col("capital_usd").first()).iter_rows()
        }
        assert by_version == capitals
        closed_a = sum(
            trade_period(
                data.bars["BTC_USDT"], "BTC_USDT", SET_A, Direction.LONG, _trading(btc),
                start=datetime(2022, 4, 1, tzinfo=UTC), end=END,
            ).trades.filter(pl.col("closed"))["pnl_usd"].to_list()
        )  # fmt: skip
        reported = float(live.filter(pl.col("version") == 1)["pnl_usd"].sum())
        assert reported == pytest.approx(closed_a * capitals[1] / INIT_CASH)
