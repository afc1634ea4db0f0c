"""PBO and DSR on the portfolio's per-timestamp returns.

* Simultaneous bars of several instruments are one observation (``TimestampPool``).
* CSCV ranks trials by the Sharpe of exactly the rows of its blocks (``BlockSums``); the old
  re-bucketing into <= 4,000 summed rows could change which trial is best.
* ``overfitting_report(..., trials_tried=N)`` sets the DSR's number of trials.
"""

import math
from datetime import UTC, datetime
from statistics import NormalDist

import numpy as np
import polars as pl
import pytest

from ffe_dagster.config import load_curriculum
from ffe_dagster.config.settings import PACKAGE_DIR
from ffe_dagster.core.backtest.reference import CostModel, Direction, Segment
from ffe_dagster.core.backtest.strategies import get_strategy
from ffe_dagster.core.robustness.deflated_sharpe import TimestampPool, deflated_sharpe_from_returns
from ffe_dagster.core.robustness.pbo import (
    BlockSums,
    pbo_from_block_sums,
    probability_of_backtest_overfitting,
)
from ffe_dagster.core.study.evaluation import LevelEvaluator, Period
from ffe_dagster.core.study.level_robustness import overfitting_report
from ffe_dagster.core.study.level_specs import bars_to_segment
from ffe_dagster.core.study.optimize import StudyOutcome, TrialRecord

CRYPTO = 8766.0
FOREX = 365.25 * 24 * 120 / 168 - 2 * 24 * 5 / 7


def _hours(n: int, start: int = 0) -> np.ndarray:
    return (np.arange(n) + start).astype("datetime64[h]").astype("datetime64[us]")


def test_simultaneous_bars_pool_into_one_observation() -> None:
    # BTC and ETH at hours 0 and 1, EUR/USD alone at hour 2 (input in any order).
    ts = np.concatenate([_hours(2), _hours(2), _hours(1, start=2)])
    returns = np.array([0.01, 0.02, 0.03, -0.02, 0.05])
    pool = TimestampPool.of(ts, np.array([CRYPTO, CRYPTO, CRYPTO, CRYPTO, FOREX]))
    assert pool.n_obs == 3
    np.testing.assert_allclose(pool.pool(returns), [0.02, 0.0, 0.05], rtol=1e-15)
    assert pool.periods_per_year == pytest.approx((2 * CRYPTO + FOREX) / 3, rel=1e-15)
    with pytest.raises(ValueError, match="4 returns"):
        pool.pool(returns[:4])


def test_dsr_counts_simultaneous_bars_once() -> None:
    # BTC and ETH both return 0.001 +- 0.01 alternately over the same 1,000 hours. Pooled: one
    # series of 1,000 observations with skew 0 and kurtosis 1, so PSR = Phi(0.1 * 999 / sqrt(1000))
    # (worked in test_robustness); counted twice it would claim 2,000 observations.
    one = 0.001 + 0.01 * np.tile([1.0, -1.0], 500)
    pool = TimestampPool.of(np.concatenate([_hours(1000)] * 2), np.full(2000, CRYPTO))
    pooled = deflated_sharpe_from_returns(
        pool.pool(np.concatenate([one, one])),
        trial_sharpes=[1.0, 2.0, 3.0],
        periods_per_year=CRYPTO,
    )
    assert pooled.n_obs == 1000
    assert pooled.psr == pytest.approx(NormalDist().cdf(0.1 * 999 / math.sqrt(1000)), abs=1e-12)
    twice = deflated_sharpe_from_returns(
        np.concatenate([one, one]), trial_sharpes=[1.0, 2.0, 3.0], periods_per_year=CRYPTO
    )
    assert twice.n_obs == 2000 and twice.psr > pooled.psr  # the inflation that was fixed


def _old_chunk_sums(returns: np.ndarray, rows: int) -> np.ndarray:
    # The re-bucketing this fix removed, kept here to show the case it got wrong.
    edges = np.linspace(0, returns.shape[0], rows + 1).astype(np.int64)
    return np.add.reduceat(returns, edges[:-1], axis=0)


def test_aggregation_no_longer_changes_the_in_sample_winner() -> None:
    # 8,000 bars; trial A: iid noise with a per-bar Sharpe of about 0.1; trial B: +-2 % alternating
    # around 0.05 %, per-bar Sharpe 0.025, but every pair of bars sums to 0.1 %: summed into 4,000
    # two-bar rows, B looks almost riskless (Sharpe ~ 70) and wins every in-sample half.
    rng = np.random.default_rng(7)
    a = 0.001 + 0.01 * rng.standard_normal(8000)
    b = 0.0005 + 0.02 * np.tile([1.0, -1.0], 4000) + 1e-5 * rng.standard_normal(8000)
    matrix = np.column_stack([a, b])
    old = probability_of_backtest_overfitting(_old_chunk_sums(matrix, 4000), n_blocks=16)
    new = pbo_from_block_sums(BlockSums.of(matrix, 16))
    # The in-sample winner's in-sample Sharpe tells which trial won: B's is huge under the old
    # rows; under the new, it is exactly A's per-bar Sharpe over those bars.
    assert np.all(old.is_performance > 10.0)
    first = new.combinations[0]  # blocks 0..7: the first 4,000 bars
    assert first == tuple(range(8))
    half = a[:4000]
    assert new.is_performance[0] == pytest.approx(half.mean() / half.std(ddof=1), rel=1e-9)
    assert np.all(new.is_performance < 0.5)
    # The same numbers with the whole matrix in memory, and trial by trial.
    whole = probability_of_backtest_overfitting(matrix, n_blocks=16)
    by_trial = pbo_from_block_sums(
        BlockSums.side_by_side([BlockSums.of(a, 16), BlockSums.of(b, 16)])
    )
    np.testing.assert_allclose(by_trial.is_performance, whole.is_performance, rtol=1e-12)
    assert by_trial.pbo == whole.pbo == new.pbo


@pytest.fixture(scope="module")
def evaluator() -> LevelEvaluator:
    # BTC and ETH over the same 40 days of 2022: every bar has a simultaneous twin.
    segments: list[Segment] = []
    for symbol in ("BTC_USDT", "ETH_USDT"):
        frame = pl.read_parquet(PACKAGE_DIR / "data" / "samples" / f"{symbol}_1h.parquet").filter(
            pl.col("ts").is_between(
                datetime(2022, 1, 1, tzinfo=UTC), datetime(2022, 2, 9, 23, tzinfo=UTC)
            )
        )
        segments.append(bars_to_segment(frame, symbol, CRYPTO))
    return LevelEvaluator(
        segments, get_strategy("sma_crossover"), Direction.BOTH, CostModel(), 0.6, 0.2
    )


def _outcome(evaluator: LevelEvaluator) -> StudyOutcome:
    base = {
        "stop_loss_pct": 2.0,
        "take_profit_pct": 4.0,
        "position_size_pct": 2.0,
        "trailing_stop_pct": 1.5,
        "stop_mode": "fixed",
    }
    trials = []
    for n, (fast, slow) in enumerate([(5, 20), (8, 30), (12, 48), (20, 60), (10, 100), (6, 40)]):
        params = {**base, "fast_window": fast, "slow_window": slow}
        metrics = evaluator.evaluate(params, Period.TRAIN).as_dict()
        trials.append(TrialRecord(n, params, metrics, True))
    return StudyOutcome("s", tuple(trials), (0,), 0, len(trials))


def test_overfitting_report_pools_timestamps_and_takes_the_chains_trial_count(
    evaluator: LevelEvaluator,
) -> None:
    outcome = _outcome(evaluator)
    spec = load_curriculum(PACKAGE_DIR / "config" / "curriculum.yaml").robustness
    chosen = outcome.trials[2].params
    own = overfitting_report(evaluator, outcome, chosen, spec)
    train_ts, _ = evaluator.bar_stamps(Period.TRAIN)
    assert own["dsr_bars"] == train_ts.size
    assert own["dsr_observations"] == np.unique(train_ts).size == train_ts.size // 2
    assert own["dsr_trials"] == 6
    chain = overfitting_report(evaluator, outcome, chosen, spec, trials_tried=600)
    assert chain["dsr_trials"] == 600
    # More trials raise the luck benchmark and lower the DSR; the rest is unchanged.
    assert chain["expected_max_sharpe"] > own["expected_max_sharpe"]
    assert chain["deflated_sharpe"] < own["deflated_sharpe"]
    assert chain["pbo"] == own["pbo"] and chain["train_sharpe"] == own["train_sharpe"]
    with pytest.raises(ValueError, match="fewer than the 6 trials"):
        overfitting_report(evaluator, outcome, chosen, spec, trials_tried=5)
