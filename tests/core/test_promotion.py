"""Promotion gates and safety limits on hand-made performance, and the performance they judge:
paper trading on real bars (checked against independent computations) and live results (numbers
worked out by hand)."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from ffe_dagster.core.backtest import CostModel, Direction, run_engine
from ffe_dagster.core.curriculum import bars_to_segment
from ffe_dagster.core.engine import T_CLOSED, T_PNL
from ffe_dagster.core.evaluation import evaluate_recent, trade_params
from ffe_dagster.core.promotion import (
    ColdGateConfig,
    LimitedGateConfig,
    Outcome,
    Performance,
    PromotionRegime,
    SafetyLimits,
    WarmGateConfig,
    choose_for_regime,
    cold_gate,
    combine_live_results,
    limited_gate,
    live_performance,
    normalize_live_results,
    paper_performance,
    safety_gate,
    sharpe_degradation_pct,
    warm_gate,
    watermark,
)
from ffe_dagster.core.strategies import get_strategy
from ffe_dagster.settings import PACKAGE_DIR

LIMITS = SafetyLimits()
GOOD = Performance(
    sharpe=1.0,
    win_rate_pct=55.0,
    max_drawdown_pct=1.0,
    n_trades=25,
    n_wins=14,
    pnl_usd=50.0,
    worst_day_pnl_usd=-2.0,
    hours=100.0,
    extra={"total_return_pct": 0.5},
)


def _names(decision, *, failed: bool = True) -> set[str]:
    if failed:
        return {c.name for c in decision.checks if not c.passed and not c.waiting}
    return {c.name for c in decision.checks if c.waiting}


# --- COLD ---------------------------------------------------------------------------------------


def _cold(perf: Performance, reference: float = 1.0):
    return cold_gate(lambda _: perf, ColdGateConfig(), reference_sharpe=reference, limits=LIMITS)


def test_the_cold_window_grows_until_there_are_enough_trades() -> None:
    asked: list[int] = []

    def evaluate(days: int) -> Performance:
        asked.append(days)
        return replace(GOOD, n_trades={7: 4, 14: 12, 30: 25}[days])

    decision = cold_gate(evaluate, ColdGateConfig(), reference_sharpe=1.0, limits=LIMITS)
    assert asked == [7, 14, 30]
    assert decision.passed and decision.window == "the last 30 days"
    assert decision.metrics["window_days"] == 30.0


def test_the_cold_window_stops_growing_once_it_holds_enough_trades() -> None:
    asked: list[int] = []

    def evaluate(days: int) -> Performance:
        asked.append(days)
        return GOOD

    assert cold_gate(evaluate, ColdGateConfig(), reference_sharpe=1.0, limits=LIMITS).passed
    assert asked == [7]


@pytest.mark.parametrize(
    ("field", "passing", "failing", "check", "text"),
    [
        ("sharpe", 0.5, 0.49, "sharpe", "sharpe 0.49 (too low; needs >= 0.5)"),
        ("win_rate_pct", 40.0, 39.99, "win_rate", "win_rate 39.99% (too low; needs >= 40%)"),
        ("pnl_usd", 0.01, 0.0, "pnl", "pnl $0.00 (too low; needs > $0.00)"),
        ("n_trades", 20, 19, "trades", "trades 19 (too low; needs >= 20)"),
    ],
)
def test_each_cold_threshold_at_its_boundary(
    field: str, passing: float, failing: float, check: str, text: str
) -> None:
    # reference 0.5: a Sharpe of 0.49 is a 2 % degradation, well inside the 30 % limit
    assert _cold(replace(GOOD, **{field: passing}), reference=0.5).passed
    decision = _cold(replace(GOOD, **{field: failing}), reference=0.5)
    assert decision.outcome is Outcome.FAIL
    assert check in _names(decision)
    assert text in decision.reason
    # 25 trades fill the first window; with 19 it grows to the longest one
    days = 30 if field == "n_trades" else 7
    assert decision.reason.startswith(f"COLD failed on the last {days} days: ")


def test_cold_names_only_the_failed_thresholds() -> None:
    decision = _cold(replace(GOOD, sharpe=0.2, pnl_usd=-0.1), reference=0.2)
    assert _names(decision) == {"sharpe", "pnl"}
    assert "sharpe 0.2" in decision.reason and "pnl -$0.10" in decision.reason
    assert "win_rate" not in decision.reason


def test_cold_checks_the_safety_limits_and_never_waits() -> None:
    decision = _cold(replace(GOOD, worst_day_pnl_usd=-5.01, max_drawdown_pct=8.01))
    assert _names(decision) == {"safety.daily_loss", "safety.max_drawdown"}
    assert "safety.daily_loss $5.01 (too high; needs <= $5.00)" in decision.reason
    # COLD judges bars that exist already: too few trades is a failure, not a wait
    few = _cold(replace(GOOD, n_trades=19))
    assert few.outcome is Outcome.FAIL
    assert {"trades", "safety.min_trades"} <= _names(few)
    # the study expected a validation Sharpe of 1.0; 0.7 on unseen bars is a 30 % degradation
    assert _cold(replace(GOOD, sharpe=0.7), reference=1.0).passed
    worse = _cold(replace(GOOD, sharpe=0.69), reference=1.0)
    assert _names(worse) == {"safety.sharpe_degradation"}
    assert "safety.sharpe_degradation 31% (too high; needs <= 30%)" in worse.reason


def test_the_first_passing_candidate_is_chosen() -> None:
    candidates = [{"x": 1.0}, {"x": 2.0}, {"x": 3.0}]
    seen: list[int] = []

    def gate(index: int, params):  # only x >= 2 passes
        seen.append(index)
        perf = GOOD if params["x"] >= 2 else replace(GOOD, sharpe=0.0)
        return _cold(perf, reference=0.0)

    choice = choose_for_regime(PromotionRegime.BULL, 1, candidates, gate)
    assert choice.params == {"x": 2.0} and choice.tried == 2 and choice.index == 1
    assert seen == [0, 1]
    none = choose_for_regime(PromotionRegime.BEAR, 2, candidates[:1], gate)
    assert none.params is None and none.index is None
    assert "no candidate of level 2 passed" in none.reason


# --- WARM ---------------------------------------------------------------------------------------


def _warm(candidate: Performance, current: Performance | None, reference: float = 1.0):
    return warm_gate(
        candidate, current, reference_sharpe=reference, config=WarmGateConfig(), limits=LIMITS
    )


CURRENT = replace(GOOD, sharpe=1.0, win_rate_pct=50.0)


def test_warm_passes_at_ten_percent_more_sharpe_and_two_more_points() -> None:
    decision = _warm(replace(GOOD, sharpe=1.1, win_rate_pct=52.0), CURRENT)
    assert decision.passed, decision.reason
    assert decision.baseline["sharpe"] == 1.0 and decision.baseline["win_rate_pct"] == 50.0
    assert decision.window == "100.0 h of bars after the candidate was made"


@pytest.mark.parametrize(
    ("candidate", "check", "text"),
    [
        (
            replace(GOOD, sharpe=1.0999, win_rate_pct=52.0),
            "sharpe_vs_current",
            "sharpe_vs_current 1.0999 (too low; needs >= 1.1, current 1 + 10 %)",
        ),
        (
            replace(GOOD, sharpe=1.1, win_rate_pct=51.99),
            "win_rate_vs_current",
            "win_rate_vs_current 51.99% (too low; needs >= 52%)",
        ),
    ],
)
def test_warm_fails_just_below_each_comparison(
    candidate: Performance, check: str, text: str
) -> None:
    decision = _warm(candidate, CURRENT)
    assert decision.outcome is Outcome.FAIL
    assert _names(decision) == {check}
    assert text in decision.reason


def test_warm_drawdown_limit_is_eight_percent() -> None:
    better = replace(GOOD, sharpe=1.1, win_rate_pct=52.0)
    assert _warm(replace(better, max_drawdown_pct=8.0), CURRENT).passed
    decision = _warm(replace(better, max_drawdown_pct=8.01), CURRENT)
    # the WARM criterion and the safety limit are separate checks with their own reasons
    assert _names(decision) == {"drawdown", "safety.max_drawdown"}


@pytest.mark.parametrize(
    ("current_sharpe", "candidate_sharpe", "passed"),
    [
        (-0.5, 0.01, True),
        (-0.5, -0.4, False),  # better than the current set, but still losing
        (-0.5, 0.0, False),
        (0.0, 0.0, False),
        (0.0, 0.001, True),
    ],
)
def test_warm_against_a_current_sharpe_of_zero_or_below(
    current_sharpe: float, candidate_sharpe: float, passed: bool
) -> None:
    current = replace(CURRENT, sharpe=current_sharpe)
    # reference = the candidate's own Sharpe, so the degradation limit stays out of the way
    decision = _warm(
        replace(GOOD, sharpe=candidate_sharpe, win_rate_pct=52.0), current, candidate_sharpe
    )
    assert decision.passed is passed
    if not passed:
        assert _names(decision) == {"sharpe_vs_current"}
        assert "is not positive" in decision.reason


def test_warm_without_a_current_version_compares_with_staying_flat() -> None:
    decision = _warm(replace(GOOD, sharpe=0.3, win_rate_pct=45.0), None, reference=0.3)
    assert decision.passed, decision.reason
    assert decision.baseline["sharpe"] == 0.0 and decision.baseline["n_trades"] == 0.0


def test_warm_waits_for_four_hours_of_bars() -> None:
    decision = _warm(replace(GOOD, hours=3.9, sharpe=5.0, win_rate_pct=90.0), CURRENT, 5.0)
    assert decision.outcome is Outcome.WAIT
    assert "window_hours" in _names(decision, failed=False)
    assert "window_hours not judged (3.9 of 4 h so far)" in decision.reason


def test_warm_waits_for_enough_trades_instead_of_rejecting() -> None:
    # a bad start on 5 trades is not judged yet: the candidate waits in WARM
    decision = _warm(replace(GOOD, n_trades=5, n_wins=0, sharpe=-5.0, win_rate_pct=0.0), CURRENT)
    assert decision.outcome is Outcome.WAIT
    assert _names(decision, failed=False) == {
        "sharpe_vs_current",
        "win_rate_vs_current",
        "safety.min_trades",
        "safety.sharpe_degradation",
        "safety.win_rate",
    }
    assert decision.reason.startswith("WARM waiting on 100.0 h of bars")


def test_warm_rejects_a_loss_limit_breach_while_waiting() -> None:
    decision = _warm(replace(GOOD, n_trades=5, worst_day_pnl_usd=-6.0), CURRENT)
    assert decision.outcome is Outcome.FAIL
    assert _names(decision) == {"safety.daily_loss"}


def test_warm_gives_up_after_the_longest_wait() -> None:
    still = _warm(replace(GOOD, n_trades=19, hours=719.0), CURRENT)
    assert still.outcome is Outcome.WAIT
    expired = _warm(replace(GOOD, n_trades=19, hours=720.0), CURRENT)
    assert expired.outcome is Outcome.FAIL
    assert _names(expired) == {"safety.min_trades"}


# --- LIMITED ------------------------------------------------------------------------------------

LIVE_OK = Performance(
    sharpe=1.15,
    win_rate_pct=50.0,
    max_drawdown_pct=2.0,
    n_trades=20,
    n_wins=10,
    pnl_usd=-5.0,
    worst_day_pnl_usd=-3.0,
    hours=48.0,
)
LIVE_CURRENT = replace(LIVE_OK, sharpe=1.0)


def _limited(candidate: Performance, current: Performance | None = LIVE_CURRENT):
    return limited_gate(
        candidate, current, reference_sharpe=1.15, config=LimitedGateConfig(), limits=LIMITS
    )


def test_limited_passes_on_its_boundaries() -> None:
    decision = _limited(LIVE_OK)
    assert decision.passed, decision.reason
    assert decision.window == "48.0 h of live trading"


@pytest.mark.parametrize(
    ("candidate", "check", "text"),
    [
        (
            replace(LIVE_OK, sharpe=1.1499),
            "sharpe_vs_current",
            "needs >= 1.15, current 1 + 15 %",
        ),
        (
            replace(LIVE_OK, n_wins=9, win_rate_pct=45.0),
            "winning_trades",
            "winning_trades 9 (too low; needs >= 10)",
        ),
        (
            replace(LIVE_OK, pnl_usd=-5.01),
            "realized_loss",
            "realized_loss $5.01 (too high; needs <= $5.00)",
        ),
    ],
)
def test_limited_fails_beyond_each_threshold(candidate: Performance, check: str, text: str) -> None:
    decision = _limited(candidate)
    assert decision.outcome is Outcome.FAIL
    assert _names(decision) == {check}
    assert text in decision.reason


def test_limited_waits_for_24_hours_and_20_trades() -> None:
    early = _limited(replace(LIVE_OK, hours=23.9))
    assert early.outcome is Outcome.WAIT and "window_hours" in _names(early, failed=False)
    few = _limited(replace(LIVE_OK, n_trades=12, n_wins=6))
    assert few.outcome is Outcome.WAIT
    assert {"winning_trades", "safety.min_trades"} <= _names(few, failed=False)
    # a realized loss beyond $5 is judged at once, waiting or not
    lost = _limited(replace(LIVE_OK, hours=10.0, n_trades=3, n_wins=0, pnl_usd=-6.0))
    assert lost.outcome is Outcome.FAIL and _names(lost) == {"realized_loss"}
    expired = _limited(replace(LIVE_OK, hours=168.0, n_trades=12, n_wins=6))
    assert expired.outcome is Outcome.FAIL and _names(expired) == {"safety.min_trades"}


def test_limited_without_a_current_version() -> None:
    assert _limited(replace(LIVE_OK, sharpe=0.2), None).outcome is Outcome.FAIL  # degradation
    decision = limited_gate(
        replace(LIVE_OK, sharpe=0.2),
        None,
        reference_sharpe=0.2,
        config=LimitedGateConfig(),
        limits=LIMITS,
    )
    assert decision.passed and decision.baseline["sharpe"] == 0.0


# --- safety limits ------------------------------------------------------------------------------


def _safety(perf: Performance, reference: float = 2.0):
    return safety_gate(perf, reference_sharpe=reference, limits=LIMITS, window="new bars")


@pytest.mark.parametrize(
    ("field", "ok", "breach", "check", "text"),
    [
        (
            "worst_day_pnl_usd",
            -5.0,
            -5.01,
            "safety.daily_loss",
            "safety.daily_loss $5.01 (too high; needs <= $5.00)",
        ),
        (
            "sharpe",
            1.4,
            1.39,
            "safety.sharpe_degradation",
            "safety.sharpe_degradation 30.5% (too high; needs <= 30%)",
        ),
        (
            "max_drawdown_pct",
            8.0,
            8.01,
            "safety.max_drawdown",
            "safety.max_drawdown 8.01% (too high; needs <= 8%)",
        ),
        (
            "win_rate_pct",
            40.0,
            39.99,
            "safety.win_rate",
            "safety.win_rate 39.99% (too low; needs >= 40%)",
        ),
    ],
)
def test_each_safety_limit_has_its_own_reason(
    field: str, ok: float, breach: float, check: str, text: str
) -> None:
    base = replace(GOOD, sharpe=2.0)
    assert _safety(replace(base, **{field: ok})).passed
    decision = _safety(replace(base, **{field: breach}))
    assert decision.outcome is Outcome.FAIL
    assert _names(decision) == {check}
    assert text in decision.reason
    assert decision.reason.startswith("FULL failed on new bars: ")


def test_statistical_limits_wait_for_twenty_trades_loss_limits_do_not() -> None:
    few = replace(GOOD, n_trades=19, sharpe=-3.0, win_rate_pct=10.0)
    decision = _safety(few)
    assert decision.outcome is Outcome.WAIT
    assert _names(decision, failed=False) == {
        "safety.min_trades",
        "safety.sharpe_degradation",
        "safety.win_rate",
    }
    assert "safety.min_trades not judged (19 trades so far, needs 20)" in decision.reason
    breach = _safety(replace(few, n_trades=3, max_drawdown_pct=9.0))
    assert breach.outcome is Outcome.FAIL and _names(breach) == {"safety.max_drawdown"}
    assert _safety(replace(GOOD, sharpe=2.0, n_trades=20)).passed


@pytest.mark.parametrize(
    ("reference", "observed", "expected"),
    [(2.0, 2.5, 0.0), (2.0, 1.0, 50.0), (1.0, -1.0, 200.0), (0.0, -0.1, 100.0), (-1.0, -0.5, 0.0)],
)
def test_sharpe_degradation(reference: float, observed: float, expected: float) -> None:
    assert sharpe_degradation_pct(reference, observed) == pytest.approx(expected)


def test_configs_refuse_impossible_waits() -> None:
    with pytest.raises(ValueError, match="max_wait_hours"):
        WarmGateConfig(min_hours=10.0, max_wait_hours=5.0)
    with pytest.raises(ValueError, match="capital_fraction"):
        LimitedGateConfig(capital_fraction=0.0)


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
