"""The replay's pure parts on the bundled bars: the cycle timeline, the cut before each cycle's
time (bars, regime labels, hold-out), the eras rolled per cycle, and the trading of a period."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from ffe_dagster.config import load_curriculum, load_universe
from ffe_dagster.config.settings import PACKAGE_DIR
from ffe_dagster.core.backtest.reference import INIT_CASH, CostModel, Direction
from ffe_dagster.core.backtest.strategies import get_strategy
from ffe_dagster.core.promotion.performance import normalize_live_results, paper_performance
from ffe_dagster.core.regimes.detection import RegimeConfig, detect_regimes
from ffe_dagster.core.replay.equity import (
    Trading,
    buy_and_hold,
    live_rows,
    portfolio_returns,
    summarize,
    trade_period,
)
from ffe_dagster.core.replay.timeline import (
    Cadence,
    curriculum_at,
    cycle_times,
    level_data_before,
    newest_bar,
    rows_before,
)
from ffe_dagster.core.study.eras import LevelData
from ffe_dagster.core.study.levels import level_evaluator, level_test_evaluator
from ffe_dagster.replay.driver import bundled_history

CURRICULUM = load_curriculum(PACKAGE_DIR / "config" / "curriculum.yaml")
UNIVERSE = load_universe(PACKAGE_DIR / "config" / "universe.yaml")
UTC_DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def history() -> LevelData:
    return bundled_history(UNIVERSE, PACKAGE_DIR / "data" / "samples")


def _t(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, tzinfo=UTC)


def test_cycle_times_weekly_and_monthly() -> None:
    assert cycle_times(_t(2022, 1, 1), _t(2022, 1, 22), Cadence.WEEKLY) == (
        _t(2022, 1, 1),
        _t(2022, 1, 8),
        _t(2022, 1, 15),
    )
    assert cycle_times(_t(2022, 11, 15), _t(2023, 2, 15), Cadence.MONTHLY) == (
        _t(2022, 11, 15),
        _t(2022, 12, 15),
        _t(2023, 1, 15),
    )
    assert len(cycle_times(_t(2022, 1, 1), _t(2024, 7, 1), Cadence.MONTHLY)) == 30
    with pytest.raises(ValueError, match="not after its start"):
        cycle_times(_t(2022, 2, 1), _t(2022, 1, 1), Cadence.WEEKLY)
    with pytest.raises(ValueError, match=r"day 1\.\.28"):
        cycle_times(_t(2022, 1, 31), _t(2022, 6, 1), Cadence.MONTHLY)
    with pytest.raises(ValueError, match="timezone-aware"):
        cycle_times(datetime(2022, 1, 1), _t(2022, 6, 1), Cadence.WEEKLY)


def test_rows_before_is_strict() -> None:
    frame = pl.DataFrame({"ts": [_t(2022, 1, 1), _t(2022, 1, 2), _t(2022, 1, 3)], "x": [1, 2, 3]})
    cut = rows_before({"A": frame, "B": frame.tail(1)}, _t(2022, 1, 2))
    assert cut["A"]["x"].to_list() == [1]  # the bar at t itself is not known at t
    assert "B" not in cut  # an instrument with no bar before t did not exist yet


@pytest.mark.parametrize("t", [_t(2022, 3, 1), _t(2023, 6, 12), _t(2024, 6, 1)])
def test_the_cut_leaves_no_bar_at_or_after_t(history: LevelData, t: datetime) -> None:
    data = level_data_before(history, t, CURRICULUM.holdout_days)
    assert set(data.bars) == {"BTC_USDT", "ETH_USDT", "EUR_USD"}
    for key, frame in data.bars.items():
        last, last_label = frame["ts"].max(), data.regimes[key]["ts"].max()
        assert isinstance(last, datetime) and isinstance(last_label, datetime)
        assert last < t and last_label < t
        # the hold-out is the newest 30 days of what is known at t
        assert data.holdout_start[key] == last - timedelta(days=30)
    newest = newest_bar(data)
    assert newest is not None and t - timedelta(hours=1) <= newest < t


def test_cut_regime_labels_equal_labels_recomputed_on_the_cut_bars(history: LevelData) -> None:
    # The replay cuts the labels computed on the whole history; that is no look-ahead only if the
    # detector labels each bar from earlier days alone. Checked here on real bars.
    t = _t(2023, 3, 17) + timedelta(hours=13)
    data = level_data_before(history, t, CURRICULUM.holdout_days)
    for key, bars in data.bars.items():
        recomputed = detect_regimes(bars, RegimeConfig())
        assert recomputed.height == data.regimes[key].height
        assert recomputed.equals(data.regimes[key]), key


def test_rolled_eras_keep_every_train_and_test_bar_before_t(history: LevelData) -> None:
    for t in cycle_times(_t(2022, 1, 1), _t(2024, 7, 1), Cadence.MONTHLY)[::7]:
        rolled = curriculum_at(CURRICULUM, t, test_days=180)
        era = rolled.era_start("BTC_USDT")
        assert era is not None and era == t - timedelta(days=30 + 180)
        data = level_data_before(history, t, rolled.holdout_days)
        for spec in rolled.levels:
            assert all(w.end < era for w in spec.windows), spec.asset
            assert all(era <= w.start and w.end < t for w in spec.test_windows), spec.asset
            train = level_evaluator(spec, rolled, data)
            for seg in train.segments:
                assert seg.ts[-1] < np.datetime64(era.replace(tzinfo=None), "us")
            tester = level_test_evaluator(spec, rolled, data)
            for seg in tester.segments if tester else ():
                first, last = seg.ts[0], seg.ts[-1]
                assert first >= np.datetime64(era.replace(tzinfo=None), "us")
                assert last < np.datetime64(data.holdout_start[seg.instrument].replace(tzinfo=None))


def test_rolling_grows_the_whole_era_windows_and_keeps_trend_windows() -> None:
    t = _t(2023, 7, 1)
    rolled = curriculum_at(CURRICULUM, t, test_days=180)
    era = t - timedelta(days=210)
    level3 = rolled.levels[2]
    # 2020-01-01 .. 2021-12-31 reached the configured era: it grows to just before the new one
    assert {w.end for w in level3.windows} == {era - timedelta(microseconds=1)}
    level2 = rolled.levels[1]
    assert level2.windows == CURRICULUM.levels[1].windows  # the named crashes keep their dates
    # level 2's fixed test windows are cut to the new test era: the rest of 2022 for BTC and
    # ETH; EUR/USD's Jul-Oct 2023 starts at t, after every bar known then
    assert [(w.instrument, w.start, w.end) for w in level2.test_windows] == [
        (key, era, _t(2023, 1, 1) - timedelta(microseconds=1)) for key in ("BTC_USDT", "ETH_USDT")
    ]
    with pytest.raises(ValueError, match="test_days"):
        curriculum_at(CURRICULUM, t, test_days=0)


def _ramp(n: int) -> pl.DataFrame:
    start = _t(2022, 1, 1)
    close = 100.0 + np.arange(n, dtype=np.float64)
    return pl.DataFrame(
        {
            "ts": [start + timedelta(hours=i) for i in range(n)],
            "open": close - 0.5,
            "high": close + 1.0,
            "low": close - 1.0,
            "close": close,
            "volume": np.ones(n),
        }
    ).with_columns(pl.col("ts").dt.cast_time_unit("us"))


def test_buy_and_hold_by_hand() -> None:
    frame = _ramp(30)  # hour i closes at 100 + i; the first open is 99.5
    costs = CostModel(fee_pct=0.1, slippage_pct=0.0)
    pnl = buy_and_hold(frame, costs, start=_t(2022, 1, 1), end=_t(2022, 1, 2) + timedelta(hours=2))
    units = INIT_CASH * 0.999 / 99.5
    # day 1 holds hours 0..23 (close 123), day 2 hours 24..25 (close 125)
    assert pnl["2022-01-01"] == pytest.approx(units * 123.0 - INIT_CASH)
    assert pnl["2022-01-02"] == pytest.approx(units * 2.0)


def test_portfolio_returns_and_summary_by_hand() -> None:
    r = portfolio_returns([{"d1": 100.0, "d2": -50.0}, {"d2": -50.0}], ["d1", "d2", "d3"], 1000.0)
    assert r.tolist() == [0.1, -0.1, 0.0]
    s = summarize(np.array([0.1, -0.05]), trades=3)
    assert s.total_return_pct == pytest.approx((1.1 * 0.95 - 1.0) * 100.0)  # 4.5 %
    assert s.max_drawdown_pct == pytest.approx(5.0)
    assert s.trades == 3 and s.days == 2
    with pytest.raises(ValueError, match="capital"):
        portfolio_returns([], ["d1"], 0.0)


def test_a_period_traded_equals_paper_trading_and_reports_live_rows(history: LevelData) -> None:
    params = {
        "fast_window": 10,
        "slow_window": 29,
        "stop_loss_pct": 4.9,
        "take_profit_pct": 2.8,
        "position_size_pct": 1.0,
        "trailing_stop_pct": 2.0,
        "stop_mode": "fixed",
    }
    strategy = get_strategy("sma_crossover")
    trading = Trading(strategy, CostModel(), history.periods_per_year)
    start, end = _t(2022, 5, 1), _t(2022, 6, 1)
    frame = history.bars["BTC_USDT"]
    result = trade_period(frame, "BTC_USDT", params, Direction.LONG, trading, start=start, end=end)
    paper = paper_performance(
        {"BTC_USDT": frame.filter(pl.col("ts") < end)},
        params,
        since={"BTC_USDT": start - timedelta(microseconds=1)},
        strategy=strategy,
        direction=Direction.LONG,
        costs=CostModel(),
        periods_per_year=history.periods_per_year,
    )
    assert sum(result.daily_pnl.values()) == pytest.approx(paper.pnl_usd, rel=1e-9)
    assert result.trades.height == paper.n_trades + int((~result.trades["closed"]).sum())
    assert set(result.daily_pnl) == {f"2022-05-{d:02d}" for d in range(1, 32)}
    rows = live_rows(result, regime="BULL", version=3, capital_fraction=0.1)
    checked = normalize_live_results(rows, "replay")  # the format the trading system reports
    closed = result.trades.filter(pl.col("closed"))
    assert checked.height == closed.height > 0
    assert float(checked["pnl_usd"].sum()) == pytest.approx(float(closed["pnl_usd"].sum()) * 0.1)
    assert set(checked["capital_usd"].to_list()) == {1000.0}
    newest_close = checked["closed_at"].max()
    assert isinstance(newest_close, datetime) and newest_close < end


def test_the_replay_curriculum_is_a_copy() -> None:
    rolled = curriculum_at(CURRICULUM, _t(2023, 1, 1), test_days=90)
    assert rolled is not CURRICULUM
    assert CURRICULUM.era_start("BTC_USDT") == _t(2022, 1, 1)  # the configured one is untouched
    no_eras = replace(CURRICULUM, test_era_start={})
    assert curriculum_at(no_eras, _t(2023, 1, 1), test_days=90) is no_eras
