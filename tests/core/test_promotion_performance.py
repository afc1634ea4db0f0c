"""The performance the gates judge: paper trading on real bars (checked against independent
computations) and live results (numbers worked out by hand)."""

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from ffe_dagster.config.settings import PACKAGE_DIR
from ffe_dagster.core.backtest.engine import T_CLOSED, T_PNL
from ffe_dagster.core.backtest.reference import CostModel, Direction, run_engine
from ffe_dagster.core.backtest.strategies import get_strategy
from ffe_dagster.core.promotion.performance import (
    Performance,
    combine_live_results,
    live_performance,
    normalize_live_results,
    paper_performance,
    watermark,
)
from ffe_dagster.core.study.evaluation import evaluate_recent, trade_params
from ffe_dagster.core.study.level_specs import bars_to_segment

# --- paper performance on real bars -------------------------------------------------------------

PPY = {"BTC_USDT": 24 * 365.0, "ETH_USDT": 24 * 365.0, "EUR_USD": 24 * 252.0}
PARAMS = {
    "fast_window": 10,
    "slow_window": 29,
    "stop_loss_pct": 4.9,
    "take_profit_pct": 2.8,
    "position_size_pct": 1.0,
    "trailing_stop_pct": 2.0,
    "stop_mode": "fixed",
}
STRATEGY = get_strategy("sma_crossover")


@pytest.fixture(scope="module")
def bars() -> dict[str, pl.DataFrame]:
    """The bundled hourly bars of 2022 (the LUNA and FTX crashes), per instrument."""
    out = {}
    for symbol in PPY:
        frame = pl.read_parquet(PACKAGE_DIR / "data" / "samples" / f"{symbol}_1h.parquet")
        out[symbol] = frame.filter(
            (pl.col("ts") >= datetime(2022, 1, 1, tzinfo=UTC))
            & (pl.col("ts") < datetime(2023, 1, 1, tzinfo=UTC))
        ).select("ts", "open", "high", "low", "close", "volume")
    return out


def _paper(bars, since, params=PARAMS, direction=Direction.BOTH) -> Performance:
    return paper_performance(
        bars,
        params,
        since=since,
        strategy=STRATEGY,
        direction=direction,
        costs=CostModel(),
        periods_per_year=PPY,
    )


@pytest.mark.parametrize("days", [7, 30])
def test_paper_performance_equals_evaluate_recent(bars, days: int) -> None:
    since = {k: v - timedelta(days=days) for k, v in watermark(bars).items()}
    segments = []
    for symbol, frame in bars.items():
        lo = int((frame["ts"] <= since[symbol]).sum())
        segments.append(bars_to_segment(frame.slice(max(0, lo - 400)), symbol, PPY[symbol]))
    expected = evaluate_recent(
        segments,
        PARAMS,
        strategy=STRATEGY,
        direction=Direction.BOTH,
        costs=CostModel(),
        days=days,
    ).as_dict()
    got = _paper(bars, since).as_dict()
    assert {k: got[k] for k in expected} == expected
    assert got["hours"] == days * 24.0


def test_paper_dollars_and_days_match_an_independent_count(bars) -> None:
    btc = {"BTC_USDT": bars["BTC_USDT"]}
    since = {"BTC_USDT": datetime(2022, 11, 1, tzinfo=UTC)}
    perf = _paper(btc, since)
    # the same backtest through run_engine (its own trade records), grouped by day in polars
    frame = btc["BTC_USDT"]
    lo = int((frame["ts"] <= since["BTC_USDT"]).sum())
    warm = bars_to_segment(frame.slice(lo - 400), "BTC_USDT", PPY["BTC_USDT"])
    signals = STRATEGY.signals_for(
        warm, {k: float(v) for k, v in PARAMS.items() if k != "stop_mode"}
    )
    run = run_engine(
        warm.slice(400, len(warm)),
        signals[400:],
        direction=Direction.BOTH,
        params=trade_params(PARAMS),
        costs=CostModel(),
    )
    equity = 10_000.0 * np.cumprod(1.0 + run.returns)
    daily = (
        pl.DataFrame({"ts": frame["ts"][lo:], "pnl": np.diff(equity, prepend=10_000.0)})
        .group_by(pl.col("ts").dt.date())
        .agg(pl.col("pnl").sum())
    )
    closed = run.trades[run.trades[:, T_CLOSED] == 1.0]
    assert perf.worst_day_pnl_usd == pytest.approx(daily["pnl"].min(), rel=1e-12)
    assert perf.pnl_usd == pytest.approx(equity[-1] - 10_000.0, rel=1e-12)
    assert perf.n_trades == closed.shape[0] > 20
    assert perf.n_wins == int((closed[:, T_PNL] > 0).sum())
    assert perf.hours == (frame["ts"][-1] - since["BTC_USDT"]).total_seconds() / 3600


def test_paper_performance_without_new_bars_is_flat(bars) -> None:
    marks = watermark(bars)
    perf = _paper(bars, marks)
    assert perf.n_trades == 0 and perf.hours == 0.0 and perf.sharpe == 0.0
    # an instrument the version never saw is left out
    only_btc = _paper(bars, {"BTC_USDT": marks["BTC_USDT"] - timedelta(days=3)})
    alone = _paper(
        {"BTC_USDT": bars["BTC_USDT"]}, {"BTC_USDT": marks["BTC_USDT"] - timedelta(days=3)}
    )
    assert only_btc == alone


# --- live results -------------------------------------------------------------------------------


def _trades(rows: list[tuple[str, str, int, str, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "trade_id": [r[0] for r in rows],
            "regime": [r[1] for r in rows],
            "version": [r[2] for r in rows],
            "instrument": ["BTC_USDT"] * len(rows),
            "opened_at": [datetime.fromisoformat(r[3]) - timedelta(minutes=20) for r in rows],
            "closed_at": [datetime.fromisoformat(r[3]) for r in rows],
            "pnl_usd": [r[4] for r in rows],
            "capital_usd": [1000.0] * len(rows),
        }
    )


def test_live_performance_by_hand() -> None:
    results = normalize_live_results(
        _trades(
            [
                ("t0", "BULL", 3, "2023-12-31T21:59:00", 99.0),  # before the window
                ("t1", "BULL", 3, "2023-12-31T22:30:00", 10.0),
                ("t2", "BULL", 3, "2023-12-31T22:45:00", -5.0),
                ("t3", "BULL", 3, "2023-12-31T23:10:00", 20.0),
                ("t4", "BULL", 3, "2024-01-01T01:59:00", -10.0),
                ("t5", "BULL", 3, "2024-01-01T02:00:00", -99.0),  # the window's end is open
                ("t6", "BULL", 2, "2023-12-31T22:30:00", -99.0),  # another version
                ("t7", "BEAR", 3, "2023-12-31T22:30:00", -99.0),  # another regime
            ]
        ),
        "test",
    )
    perf = live_performance(
        results,
        regime="BULL",
        version=3,
        since=datetime(2023, 12, 31, 22, tzinfo=UTC),
        until=datetime(2024, 1, 1, 2, tzinfo=UTC),
        bar_period=timedelta(hours=1),
        periods_per_year=8760.0,
    )
    # returns 0.01, -0.005, 0.02, -0.01 -> hourly buckets 0.005, 0.02, 0, -0.01:
    # mean 0.00375, sample std 0.0125, Sharpe 0.3 * sqrt(8760)
    assert perf.sharpe == pytest.approx(0.3 * np.sqrt(8760.0), rel=1e-12)
    assert (perf.n_trades, perf.n_wins, perf.win_rate_pct) == (4, 2, 50.0)
    assert perf.pnl_usd == pytest.approx(15.0)
    assert perf.worst_day_pnl_usd == pytest.approx(-10.0)  # 2023-12-31: +25, 2024-01-01: -10
    # cumulative return 1.01, 1.005, 1.025, 1.015: deepest fall 0.01 from the 1.025 peak
    assert perf.max_drawdown_pct == pytest.approx(0.01 / 1.025 * 100.0, rel=1e-12)
    assert perf.hours == 4.0
    assert perf.extra["total_return_pct"] == pytest.approx(1.5)


def test_live_performance_without_trades_is_flat() -> None:
    perf = live_performance(
        combine_live_results([]),
        regime="BULL",
        version=1,
        since=datetime(2024, 1, 1, tzinfo=UTC),
        until=datetime(2024, 1, 2, tzinfo=UTC),
        bar_period=timedelta(hours=1),
        periods_per_year=8760.0,
    )
    assert perf.n_trades == 0 and perf.sharpe == 0.0 and perf.hours == 24.0


def test_live_results_format_is_checked() -> None:
    good = _trades([("t1", "BULL", 1, "2024-01-01T01:00:00", 1.0)])
    # naive timestamps (a CSV written without zone) are read as UTC
    frame = normalize_live_results(good, "f")
    assert frame["closed_at"][0] == datetime(2024, 1, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match=r"f: missing columns \['capital_usd'\]"):
        normalize_live_results(good.drop("capital_usd"), "f")
    with pytest.raises(ValueError, match="unknown regimes"):
        normalize_live_results(good.with_columns(regime=pl.lit("UP")), "f")
    with pytest.raises(ValueError, match="capital_usd must be positive"):
        normalize_live_results(good.with_columns(capital_usd=pl.lit(0.0)), "f")
    with pytest.raises(ValueError, match="nulls"):
        normalize_live_results(good.with_columns(pnl_usd=pl.lit(None, pl.Float64)), "f")
    # the same trade sent twice counts once; the same id with other values is an error
    assert combine_live_results([frame, frame]).height == 1
    other = normalize_live_results(good.with_columns(pnl_usd=pl.lit(2.0)), "g")
    with pytest.raises(ValueError, match="conflicting rows"):
        combine_live_results([frame, other])
