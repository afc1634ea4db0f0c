"""Convergence series and study datasets (pure core) against hand-worked numbers."""

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from ffe_dagster.core.study.convergence import StepValue, best_feasible_so_far, trials_per_second
from ffe_dagster.core.study.datasets import DataWindow, study_datasets
from ffe_dagster.core.study.level_specs import bars_to_segment
from ffe_dagster.core.study.optimize import TrialRecord


def trial(number: int, feasible: bool, sharpe: float, win: float, dd: float) -> TrialRecord:
    metrics = {"sharpe": sharpe, "win_rate_pct": win, "max_drawdown_pct": dd}
    return TrialRecord(number=number, params={}, metrics=metrics, feasible=feasible)


def test_best_feasible_so_far_ignores_infeasible_trials_and_follows_directions() -> None:
    trials = [  # out of order on purpose: the series follows trial numbers
        trial(4, True, 1.5, 40.0, 8.0),
        trial(0, False, 5.0, 99.0, 0.5),  # best numbers, but infeasible: never counts
        trial(2, True, 0.5, 60.0, 12.0),
        trial(1, True, 1.0, 50.0, 10.0),
        trial(3, False, 9.0, 90.0, 1.0),
    ]
    series = best_feasible_so_far(trials)
    by_name: dict[str, list[tuple[int, float]]] = {}
    for p in series:
        by_name.setdefault(p.name, []).append((p.step, p.value))
    # Worked by hand: step 0 has no feasible trial yet; sharpe and win rate keep the maximum,
    # drawdown the minimum, of feasible trials 1, 2 and 4.
    assert by_name == {
        "best_feasible_sharpe": [(1, 1.0), (2, 1.0), (3, 1.0), (4, 1.5)],
        "best_feasible_win_rate_pct": [(1, 50.0), (2, 60.0), (3, 60.0), (4, 60.0)],
        "best_feasible_max_drawdown_pct": [(1, 10.0), (2, 10.0), (3, 10.0), (4, 8.0)],
    }


def test_no_feasible_trial_gives_no_series() -> None:
    assert best_feasible_so_far([trial(0, False, 1.0, 50.0, 5.0)]) == ()


def test_trials_per_second_is_cumulative_from_the_start() -> None:
    # Started at t=100 s; trials 0 and 1 finish in one batch at 101 s, 2 at 102 s, 3 at 104 s:
    # 1/1, 2/1, 3/2 and 4/4 trials per second. A trial finished at the start has no rate.
    finished = {0: 101.0, 1: 101.0, 2: 102.0, 3: 104.0}
    assert trials_per_second(finished, 100.0) == (
        StepValue("trials_per_second", 0, 1.0),
        StepValue("trials_per_second", 1, 2.0),
        StepValue("trials_per_second", 2, 1.5),
        StepValue("trials_per_second", 3, 1.0),
    )
    assert trials_per_second({7: 50.0}, 50.0) == ()


def bars(start: datetime, closes: list[float]) -> pl.DataFrame:
    ts = [start + timedelta(hours=h) for h in range(len(closes))]
    c = np.array(closes)
    return pl.DataFrame(
        {"ts": ts, "open": c, "high": c + 1, "low": c - 1, "close": c, "volume": np.ones(c.size)}
    )


def test_study_datasets_split_like_the_evaluator() -> None:
    day = datetime(2024, 1, 1)
    btc = bars_to_segment(bars(day, [float(x) for x in range(100, 110)]), "BTC_USDT", 8760)
    eth = bars_to_segment(bars(day, [float(x) for x in range(10, 15)]), "ETH_USDT", 8760)
    train, validation, test = study_datasets(
        [btc, eth], train_fraction=0.6, validation_fraction=0.2
    )
    # 10 bars: train [0, 6), validation [6, 8), test [8, 10). 5 bars: train [0, 3); validation
    # [3, 4) and test [4, 5) hold one bar each, fewer than the evaluator backtests: left out.
    assert (train.context, validation.context, test.context) == ("train", "validation", "test")
    assert train.windows == (
        DataWindow("BTC_USDT", "2024-01-01T00:00:00.000000", "2024-01-01T05:00:00.000000", 6),
        DataWindow("ETH_USDT", "2024-01-01T00:00:00.000000", "2024-01-01T02:00:00.000000", 3),
    )
    assert validation.windows == (
        DataWindow("BTC_USDT", "2024-01-01T06:00:00.000000", "2024-01-01T07:00:00.000000", 2),
    )
    assert test.windows == (
        DataWindow("BTC_USDT", "2024-01-01T08:00:00.000000", "2024-01-01T09:00:00.000000", 2),
    )
    assert (train.bars, train.instruments) == (9, ("BTC_USDT", "ETH_USDT"))
    assert len({train.digest, validation.digest, test.digest}) == 3
    assert all(len(d.digest) == 16 for d in (train, validation, test))


def test_with_eras_the_test_dataset_is_the_test_era_segments() -> None:
    # Train and validation split the train/validation segment 3 : 1 (train 0.6 of 0.8); the test
    # dataset is the whole test-era segment, not a tail of the first.
    day = datetime(2024, 1, 1)
    era1 = bars_to_segment(bars(day, [float(x) for x in range(100, 108)]), "BTC_USDT", 8760)
    era2 = bars_to_segment(bars(datetime(2024, 2, 1), [1.0, 2.0, 3.0]), "BTC_USDT", 8760)
    train, validation, test = study_datasets(
        [era1], train_fraction=0.75, validation_fraction=0.25, test_segments=[era2]
    )
    assert (train.bars, validation.bars) == (6, 2)
    assert test.windows == (
        DataWindow("BTC_USDT", "2024-02-01T00:00:00.000000", "2024-02-01T02:00:00.000000", 3),
    )
    (none,) = study_datasets(
        [era1], train_fraction=0.75, validation_fraction=0.25, test_segments=()
    )[2:]
    assert none.windows == ()


def test_a_changed_price_changes_only_its_periods_digest() -> None:
    day = datetime(2024, 1, 1)
    closes = [float(x) for x in range(100, 110)]
    before = study_datasets(
        [bars_to_segment(bars(day, closes), "BTC_USDT", 8760)],
        train_fraction=0.6,
        validation_fraction=0.2,
    )
    closes[9] += 0.5  # the last bar is in the test period
    after = study_datasets(
        [bars_to_segment(bars(day, closes), "BTC_USDT", 8760)],
        train_fraction=0.6,
        validation_fraction=0.2,
    )
    assert [b.digest == a.digest for b, a in zip(before, after, strict=True)] == [
        True,
        True,
        False,
    ]
    same = study_datasets(
        [bars_to_segment(bars(day, closes), "BTC_USDT", 8760)],
        train_fraction=0.6,
        validation_fraction=0.2,
    )
    assert same == after


def test_study_datasets_need_segments_in_the_period() -> None:
    with pytest.raises(ValueError, match="no bars"):
        study_datasets([], train_fraction=0.6, validation_fraction=0.2)
