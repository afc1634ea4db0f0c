"""The COLD, WARM and LIMITED gates on hand-made performance, and the walk through a level's
candidates."""

from dataclasses import replace

import pytest

from ffe_dagster.core.promotion.config import (
    ColdGateConfig,
    LimitedGateConfig,
    Outcome,
    PromotionRegime,
    WarmGateConfig,
)
from ffe_dagster.core.promotion.gates import choose_for_regime, cold_gate, limited_gate, warm_gate
from ffe_dagster.core.promotion.performance import (
    Performance,
)
from tests.core.gate_helpers import GOOD, LIMITS, names

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
    assert check in names(decision)
    assert text in decision.reason
    # 25 trades fill the first window; with 19 it grows to the longest one
    days = 30 if field == "n_trades" else 7
    assert decision.reason.startswith(f"COLD failed on the last {days} days: ")


def test_cold_names_only_the_failed_thresholds() -> None:
    decision = _cold(replace(GOOD, sharpe=0.2, pnl_usd=-0.1), reference=0.2)
    assert names(decision) == {"sharpe", "pnl"}
    assert "sharpe 0.2" in decision.reason and "pnl -$0.10" in decision.reason
    assert "win_rate" not in decision.reason


def test_cold_checks_the_safety_limits_and_never_waits() -> None:
    decision = _cold(replace(GOOD, worst_day_pnl_usd=-5.01, max_drawdown_pct=8.01))
    assert names(decision) == {"safety.daily_loss", "safety.max_drawdown"}
    assert "safety.daily_loss $5.01 (too high; needs <= $5.00)" in decision.reason
    # COLD judges bars that exist already: too few trades is a failure, not a wait
    few = _cold(replace(GOOD, n_trades=19))
    assert few.outcome is Outcome.FAIL
    assert {"trades", "safety.min_trades"} <= names(few)
    # the study expected a validation Sharpe of 1.0; 0.7 on unseen bars is a 30 % degradation
    assert _cold(replace(GOOD, sharpe=0.7), reference=1.0).passed
    worse = _cold(replace(GOOD, sharpe=0.69), reference=1.0)
    assert names(worse) == {"safety.sharpe_degradation"}
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
    assert names(decision) == {check}
    assert text in decision.reason


def test_warm_drawdown_limit_is_eight_percent() -> None:
    better = replace(GOOD, sharpe=1.1, win_rate_pct=52.0)
    assert _warm(replace(better, max_drawdown_pct=8.0), CURRENT).passed
    decision = _warm(replace(better, max_drawdown_pct=8.01), CURRENT)
    # the WARM criterion and the safety limit are separate checks with their own reasons
    assert names(decision) == {"drawdown", "safety.max_drawdown"}


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
        assert names(decision) == {"sharpe_vs_current"}
        assert "is not positive" in decision.reason


def test_warm_without_a_current_version_compares_with_staying_flat() -> None:
    decision = _warm(replace(GOOD, sharpe=0.3, win_rate_pct=45.0), None, reference=0.3)
    assert decision.passed, decision.reason
    assert decision.baseline["sharpe"] == 0.0 and decision.baseline["n_trades"] == 0.0


def test_warm_waits_for_four_hours_of_bars() -> None:
    decision = _warm(replace(GOOD, hours=3.9, sharpe=5.0, win_rate_pct=90.0), CURRENT, 5.0)
    assert decision.outcome is Outcome.WAIT
    assert "window_hours" in names(decision, failed=False)
    assert "window_hours not judged (3.9 of 4 h so far)" in decision.reason


def test_warm_waits_for_enough_trades_instead_of_rejecting() -> None:
    # a bad start on 5 trades is not judged yet: the candidate waits in WARM
    decision = _warm(replace(GOOD, n_trades=5, n_wins=0, sharpe=-5.0, win_rate_pct=0.0), CURRENT)
    assert decision.outcome is Outcome.WAIT
    assert names(decision, failed=False) == {
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
    assert names(decision) == {"safety.daily_loss"}


def test_warm_gives_up_after_the_longest_wait() -> None:
    still = _warm(replace(GOOD, n_trades=19, hours=719.0), CURRENT)
    assert still.outcome is Outcome.WAIT
    expired = _warm(replace(GOOD, n_trades=19, hours=720.0), CURRENT)
    assert expired.outcome is Outcome.FAIL
    assert names(expired) == {"safety.min_trades"}


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
    assert names(decision) == {check}
    assert text in decision.reason


def test_limited_waits_for_24_hours_and_20_trades() -> None:
    early = _limited(replace(LIVE_OK, hours=23.9))
    assert early.outcome is Outcome.WAIT and "window_hours" in names(early, failed=False)
    few = _limited(replace(LIVE_OK, n_trades=12, n_wins=6))
    assert few.outcome is Outcome.WAIT
    assert {"winning_trades", "safety.min_trades"} <= names(few, failed=False)
    # a realized loss beyond $5 is judged at once, waiting or not
    lost = _limited(replace(LIVE_OK, hours=10.0, n_trades=3, n_wins=0, pnl_usd=-6.0))
    assert lost.outcome is Outcome.FAIL and names(lost) == {"realized_loss"}
    expired = _limited(replace(LIVE_OK, hours=168.0, n_trades=12, n_wins=6))
    assert expired.outcome is Outcome.FAIL and names(expired) == {"safety.min_trades"}


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
