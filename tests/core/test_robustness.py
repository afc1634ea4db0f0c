"""Over-fitting diagnostics checked against the papers' examples and hand-worked cases."""

import itertools
import math

import numpy as np
import pytest

from ffe_dagster.core.robustness.deflated_sharpe import (
    EULER_MASCHERONI,
    deflated_sharpe_from_returns,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
)
from ffe_dagster.core.robustness.pbo import probability_of_backtest_overfitting
from ffe_dagster.core.robustness.walk_forward import (
    WalkForwardWindow,
    parameter_sensitivity,
    stitch_returns,
    walk_forward_efficiency,
    walk_forward_windows,
)


def _phi(z: float) -> float:
    """Standard normal CDF via erf, independent of the module's ``statistics.NormalDist``."""
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


# --------------------------------------------------------------------------- PSR / DSR


def test_psr_of_normal_returns_matches_formula() -> None:
    # Normal returns (skew 0, kurtosis 3): variance term 1 + 2/4 * 0.1^2 = 1.005, sqrt(T-1) = 10.
    psr = probabilistic_sharpe_ratio(0.1, sr_benchmark=0.0, n_obs=101, skew=0.0, kurtosis=3.0)
    assert psr == pytest.approx(_phi(1.0 / math.sqrt(1.005)), abs=1e-12)
    at_benchmark = probabilistic_sharpe_ratio(
        0.2, sr_benchmark=0.2, n_obs=50, skew=-1.0, kurtosis=6.0
    )
    assert at_benchmark == pytest.approx(0.5)
    # Negative skew widens the standard error, so a positive Sharpe is less convincing.
    skewed = probabilistic_sharpe_ratio(0.1, sr_benchmark=0.0, n_obs=101, skew=-2.0, kurtosis=3.0)
    assert skewed < psr


def test_psr_rejects_impossible_inputs() -> None:
    with pytest.raises(ValueError, match="observations"):
        probabilistic_sharpe_ratio(0.1, sr_benchmark=0.0, n_obs=1, skew=0.0, kurtosis=3.0)
    # kurtosis 0 < 1 + skew^2 is no distribution: 1 - 0.25 * 3^2 < 0.
    with pytest.raises(ValueError, match="not positive"):
        probabilistic_sharpe_ratio(3.0, sr_benchmark=0.0, n_obs=10, skew=0.0, kurtosis=0.0)


def test_expected_max_sharpe_edge_cases() -> None:
    assert expected_max_sharpe(1, variance_of_sharpes=2.0) == 0.0
    assert expected_max_sharpe(10, variance_of_sharpes=4.0) == pytest.approx(
        2.0 * expected_max_sharpe(10, variance_of_sharpes=1.0)
    )
    assert expected_max_sharpe(1000, variance_of_sharpes=1.0) > expected_max_sharpe(
        10, variance_of_sharpes=1.0
    )
    with pytest.raises(ValueError):
        expected_max_sharpe(0, variance_of_sharpes=1.0)


# Bailey & López de Prado (2014), section 4 example: N = 100 trials, V = 0.5 (annualized Sharpe
# ratios), best SR = 2.5 annualized, T = 1250 daily returns, 250 days a year, skew -3, kurtosis
# 10. Worked by hand with standard normal table quantiles:
#   Φ⁻¹(1 - 1/100) = Φ⁻¹(0.99) = 2.326348;  1 - 1/(100 e) = 0.996321, Φ⁻¹(0.996321) = 2.680210
#   Z = (1 - 0.577216) * 2.326348 + 0.577216 * 2.680210 = 0.983543 + 1.547059 = 2.530602
#   √V per day = √(0.5 / 250) = √0.002 = 0.0447214  →  SR* = 0.0447214 * 2.530602 = 0.113172
#   (the paper: 0.1132; annualized 0.113172 * √250 = 1.7894)
#   SR per day = 2.5 / √250 = 0.158114
#   variance term = 1 - (-3)(0.158114) + (10 - 1)/4 * 0.158114² = 1 + 0.474342 + 0.056250
#                 = 1.530592, √ = 1.237171
#   z = (0.158114 - 0.113172) * √1249 / 1.237171 = 0.044942 * 35.341194 / 1.237171 = 1.28382
#   DSR = Φ(1.28382) = 0.90040  (the paper: 0.9004)
PAPER_SR_STAR = 0.113172
PAPER_DSR = 0.90040


def test_deflated_sharpe_reproduces_the_paper_example() -> None:
    table_z = (1 - 0.577216) * 2.326348 + 0.577216 * 2.680210
    assert EULER_MASCHERONI == pytest.approx(0.577216, abs=1e-6)
    assert expected_max_sharpe(100, variance_of_sharpes=0.5 / 250) == pytest.approx(
        math.sqrt(0.002) * table_z, abs=2e-6
    )
    assert expected_max_sharpe(100, variance_of_sharpes=0.5 / 250) == pytest.approx(
        PAPER_SR_STAR, abs=1e-6
    )
    annualized = deflated_sharpe_ratio(
        2.5,
        n_trials=100,
        variance_of_sharpes=0.5,
        n_obs=1250,
        skew=-3.0,
        kurtosis=10.0,
        periods_per_year=250,
    )
    per_day = deflated_sharpe_ratio(
        2.5 / math.sqrt(250),
        n_trials=100,
        variance_of_sharpes=0.5 / 250,
        n_obs=1250,
        skew=-3.0,
        kurtosis=10.0,
    )
    assert annualized == pytest.approx(PAPER_DSR, abs=5e-5)
    assert per_day == pytest.approx(annualized, abs=1e-12)
    assert annualized == pytest.approx(_phi(1.28382), abs=1e-5)


def _two_point_returns() -> np.ndarray:
    # 0.001 ± 0.01 alternating, 1000 bars: mean 0.001, central moments m2 = 1e-4, m3 = 0,
    # m4 = 1e-8, so skew 0 and kurtosis m4/m2² = 1 (a two-point distribution).
    return 0.001 + 0.01 * np.tile([1.0, -1.0], 500)


def test_deflated_sharpe_from_returns_uses_the_series_moments() -> None:
    returns = _two_point_returns()
    before = returns.copy()
    result = deflated_sharpe_from_returns(
        returns, trial_sharpes=[1.0, 2.0, 3.0], periods_per_year=252
    )
    np.testing.assert_array_equal(returns, before)
    assert result.skew == pytest.approx(0.0, abs=1e-9)
    assert result.kurtosis == pytest.approx(1.0, rel=1e-9)
    assert result.n_obs == 1000
    assert result.n_trials == 3
    assert result.variance_of_sharpes == pytest.approx(1.0)  # sample variance of 1, 2, 3
    # Per-bar SR = 0.001 / (0.01 √(1000/999)) = 0.1 √0.999; kurtosis 1 and skew 0 make the
    # variance term exactly 1, so PSR = Φ(0.1 √0.999 · √999) = Φ(0.1 · 999 / √1000).
    per_bar_sr = 0.1 * math.sqrt(0.999)
    assert result.sharpe == pytest.approx(per_bar_sr * math.sqrt(252), rel=1e-12)
    assert result.psr == pytest.approx(_phi(0.1 * 999 / math.sqrt(1000)), abs=1e-12)
    sr_star_per_bar = expected_max_sharpe(3, variance_of_sharpes=1.0 / 252)
    assert result.sr_star == pytest.approx(sr_star_per_bar * math.sqrt(252), rel=1e-12)
    assert result.dsr == pytest.approx(
        _phi((per_bar_sr - sr_star_per_bar) * math.sqrt(999)), abs=1e-12
    )
    assert result.dsr < result.psr


def test_deflated_sharpe_from_returns_single_trial_and_bad_input() -> None:
    single = deflated_sharpe_from_returns(
        _two_point_returns(), trial_sharpes=[1.0, 2.0, 3.0], periods_per_year=252, n_trials=1
    )
    assert single.sr_star == 0.0
    assert single.dsr == pytest.approx(single.psr)
    with pytest.raises(ValueError, match="constant"):
        deflated_sharpe_from_returns(np.zeros(10), trial_sharpes=[1.0], periods_per_year=252)
    with pytest.raises(ValueError, match="trial_sharpes"):
        deflated_sharpe_from_returns(_two_point_returns(), trial_sharpes=[], periods_per_year=1)
    with pytest.raises(ValueError, match="periods_per_year"):
        deflated_sharpe_from_returns(_two_point_returns(), trial_sharpes=[1.0], periods_per_year=0)


# --------------------------------------------------------------------------- CSCV / PBO


def test_pbo_hand_computed_two_blocks_sharpe_and_mean() -> None:
    # Rows 0-1 form block 0, rows 2-3 block 1. Two-value Sharpe: mean / (|a - b| / √2).
    #   A: [1, 3 | 0, 2]  block 0 mean 2, SR √2;        block 1 mean 1, SR 1/√2
    #   B: [0, 6 | 1, 1]  block 0 mean 3, SR 1/√2;      block 1 mean 1, constant → SR 0
    #   C: [2, 2 | 1, 5]  block 0 mean 2, constant → 0; block 1 mean 3, SR 3/(2√2)
    performance = np.array([[1, 0, 2], [3, 6, 2], [0, 1, 1], [2, 1, 5]], dtype=np.float64)
    before = performance.copy()
    sharpe = probability_of_backtest_overfitting(performance, n_blocks=2)
    np.testing.assert_array_equal(performance, before)
    assert sharpe.combinations == ((0,), (1,))
    # IS block 0 → best A (√2); OOS block 1 SRs A 0.707, B 0, C 1.061 → rank 2 of 3,
    #   ω = 2/4, λ = ln(1) = 0.
    # IS block 1 → best C (1.061); OOS block 0 SRs A 1.414, B 0.707, C 0 → rank 1,
    #   ω = 1/4, λ = ln(1/3).
    np.testing.assert_allclose(sharpe.logits, [0.0, math.log(1 / 3)], atol=1e-12)
    assert sharpe.pbo == 1.0  # λ = 0 counts: the winner was only median out of sample
    np.testing.assert_allclose(sharpe.is_performance, [math.sqrt(2), 3 / (2 * math.sqrt(2))])
    np.testing.assert_allclose(sharpe.oos_performance, [1 / math.sqrt(2), 0.0], atol=1e-12)

    mean = probability_of_backtest_overfitting(performance, n_blocks=2, metric="mean")
    # IS block 0 means A 2, B 3, C 2 → best B; OOS means A 1, B 1, C 3: B ties A for ranks 1-2,
    #   average rank 1.5, ω = 1.5/4 = 0.375, λ = ln(0.375/0.625) = ln(0.6).
    # IS block 1 means A 1, B 1, C 3 → best C; OOS means A 2, B 3, C 2: C ties A, again ln(0.6).
    np.testing.assert_allclose(mean.logits, [math.log(0.6), math.log(0.6)], atol=1e-12)
    assert mean.pbo == 1.0


def test_pbo_hand_computed_four_blocks() -> None:
    # Two trials, each block two equal rows, so block means are A = 1, 2, 3, 4 and
    # B = 4, 1, 2, 0 and a half's mean is the average of its two blocks.
    #   IS {0,1}: A 1.5 B 2.5 → B; OOS {2,3}: A 3.5 B 1.0 → B last  → λ = ln((1/3)/(2/3)) = -ln 2
    #   IS {0,2}: A 2.0 B 3.0 → B; OOS {1,3}: A 3.0 B 0.5 → B last  → -ln 2
    #   IS {0,3}: A 2.5 B 2.0 → A; OOS {1,2}: A 2.5 B 1.5 → A first → +ln 2
    #   IS {1,2}: A 2.5 B 1.5 → A; OOS {0,3}: A 2.5 B 2.0 → A first → +ln 2
    #   IS {1,3}: A 3.0 B 0.5 → A; OOS {0,2}: A 2.0 B 3.0 → A last  → -ln 2
    #   IS {2,3}: A 3.5 B 1.0 → A; OOS {0,1}: A 1.5 B 2.5 → A last  → -ln 2
    block_means = np.array([[1, 4], [2, 1], [3, 2], [4, 0]], dtype=np.float64)
    performance = np.repeat(block_means, 2, axis=0)
    result = probability_of_backtest_overfitting(performance, n_blocks=4, metric="mean")
    ln2 = math.log(2)
    assert result.n_combinations == 6
    np.testing.assert_allclose(result.logits, [-ln2, -ln2, ln2, ln2, -ln2, -ln2], atol=1e-12)
    assert result.pbo == pytest.approx(4 / 6)
    # Pairs (IS, OOS): (2.5, 1) (3, .5) (2.5, 2.5) (2.5, 2.5) (3, 2) (3.5, 1.5); centred sums
    # in 36ths: Sxy = -21/36, Sxx = 30/36, so slope -0.7 and intercept 10/6 + 0.7 * 17/6.
    assert result.degradation_slope == pytest.approx(-0.7)
    assert result.degradation_intercept == pytest.approx(10 / 6 + 0.7 * 17 / 6)
    assert result.prob_oos_loss == 0.0


def test_pbo_of_noise_is_one_half_on_average_and_symmetric() -> None:
    # Columns i.i.d. and blocks disjoint: given the in-sample data, the out-of-sample values of
    # the N trials are exchangeable, so the in-sample winner's OOS rank is uniform on 1..N and,
    # with N even (no median rank), E[PBO] = 1/2 exactly and λ is symmetric about 0. One study
    # is a noisy estimate (its combinations share data): over 3000 seeds of this design the PBO
    # had sd 0.21. Pooled over 200 seeds, measured over 20 disjoint seed groups: mean PBO sd
    # 0.017, mean λ sd 0.06, bottom/top-quarter rank share sd 0.015. The bands are ~4 sd wide.
    n_trials = 20
    results = [
        probability_of_backtest_overfitting(
            np.random.default_rng(seed).normal(0.0, 0.01, size=(160, n_trials)), n_blocks=8
        )
        for seed in range(200)
    ]
    assert all(r.n_combinations == 70 for r in results)
    assert 0.43 <= float(np.mean([r.pbo for r in results])) <= 0.57
    logits = np.concatenate([r.logits for r in results])
    assert abs(float(logits.mean())) < 0.25
    ranks = np.rint((n_trials + 1) / (1.0 + np.exp(-logits)))  # invert λ → ω → rank
    bottom, top = float(np.mean(ranks <= 5)), float(np.mean(ranks >= 16))
    assert 0.19 <= bottom <= 0.31
    assert 0.19 <= top <= 0.31


def test_pbo_combinations_are_closed_under_complement() -> None:
    data = np.random.default_rng(1).normal(0.0, 0.01, size=(96, 6))
    full = probability_of_backtest_overfitting(data, n_blocks=16)
    assert full.n_combinations == math.comb(16, 8) == 12_870
    sampled = probability_of_backtest_overfitting(data, n_blocks=16, max_combinations=400, seed=3)
    again = probability_of_backtest_overfitting(data, n_blocks=16, max_combinations=400, seed=3)
    assert sampled.n_combinations == 400
    assert sampled.combinations == again.combinations
    np.testing.assert_array_equal(sampled.logits, again.logits)
    for combos in (full.combinations, sampled.combinations):
        as_sets = {frozenset(c) for c in combos}
        assert len(as_sets) == len(combos)
        assert all(frozenset(range(16)) - c in as_sets for c in as_sets)


def test_pbo_is_zero_for_a_trial_with_real_drift() -> None:
    # 49 noise trials (sd 0.01) and one with +0.005 a bar. Over a half of 400 bars a noise
    # trial's mean has sd 0.0005, so the drift sits 10 sd above, far beyond the ~2.5 sd best of
    # 49 noise trials: it wins in-sample and is ranked N of N out of sample, λ = ln(N) always.
    rng = np.random.default_rng(7)
    data = rng.normal(0.0, 0.01, size=(800, 50))
    data[:, 17] += 0.005
    result = probability_of_backtest_overfitting(data)
    assert result.n_combinations == 12_870
    assert result.pbo == 0.0
    np.testing.assert_allclose(result.logits, math.log(50))
    assert result.prob_oos_loss == 0.0


def test_pbo_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="even"):
        probability_of_backtest_overfitting(np.zeros((40, 3)), n_blocks=5)
    with pytest.raises(ValueError, match="N >= 2"):
        probability_of_backtest_overfitting(np.zeros((40, 1)), n_blocks=4)
    with pytest.raises(ValueError, match="rows"):
        probability_of_backtest_overfitting(np.zeros((10, 3)), n_blocks=16)
    with pytest.raises(ValueError, match="NaN"):
        probability_of_backtest_overfitting(np.full((40, 3), np.nan), n_blocks=4)


# --------------------------------------------------------------------------- walk-forward


def test_rolling_and_anchored_windows_end_at_the_last_bar() -> None:
    # 4 test windows of 15 bars end at bar 100, so tests start at 100 - 60 = 40; rolling
    # training is the 40 bars before each test.
    rolling = walk_forward_windows(100, n_windows=4, train_bars=40, test_bars=15)
    assert rolling == (
        WalkForwardWindow(0, 40, 40, 55),
        WalkForwardWindow(15, 55, 55, 70),
        WalkForwardWindow(30, 70, 70, 85),
        WalkForwardWindow(45, 85, 85, 100),
    )
    anchored = walk_forward_windows(100, n_windows=4, train_bars=40, test_bars=15, anchored=True)
    assert [(w.train_start, w.train_end) for w in anchored] == [(0, 40), (0, 55), (0, 70), (0, 85)]
    # Without test_bars the tests fill the rest: (100 - 40) // 4 = 15.
    assert walk_forward_windows(100, n_windows=4, train_bars=40) == rolling
    # Three spare bars are left unused at the start, not at the end.
    assert walk_forward_windows(103, n_windows=4, train_bars=40, test_bars=15)[0] == (
        WalkForwardWindow(3, 43, 43, 58)
    )
    assert rolling[1].train == slice(15, 55)
    assert rolling[1].test == slice(55, 70)


def test_windows_from_a_train_fraction() -> None:
    # f = 0.75 → odds 3: test = ⌊1000 / (5 + 3)⌋ = 125, train = 1000 - 5 * 125 = 375.
    windows = walk_forward_windows(1000, n_windows=5, train_fraction=0.75)
    assert windows[0] == WalkForwardWindow(0, 375, 375, 500)
    assert windows[-1] == WalkForwardWindow(500, 875, 875, 1000)
    assert all(a.test_end == b.test_start for a, b in itertools.pairwise(windows))
    # f = 0.8 with 10-bar tests: train = round(10 * 0.8 / 0.2) = 40.
    assert walk_forward_windows(100, n_windows=2, train_fraction=0.8, test_bars=10)[0] == (
        WalkForwardWindow(40, 80, 80, 90)
    )


def test_windows_reject_inconsistent_sizes() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        walk_forward_windows(100, n_windows=2)
    with pytest.raises(ValueError, match="exactly one"):
        walk_forward_windows(100, n_windows=2, train_bars=10, train_fraction=0.5)
    with pytest.raises(ValueError, match="exceeds"):
        walk_forward_windows(100, n_windows=4, train_bars=50, test_bars=15)
    with pytest.raises(ValueError, match="too small"):
        walk_forward_windows(10, n_windows=20, train_bars=5)


def test_walk_forward_efficiency_is_ratio_of_means() -> None:
    # Mean IS Sharpe (2 + 1 + 1.5) / 3 = 1.5, mean OOS (1 + 0.5 + 0.75) / 3 = 0.75 → 0.5.
    assert walk_forward_efficiency([2.0, 1.0, 1.5], [1.0, 0.5, 0.75]) == pytest.approx(0.5)
    assert walk_forward_efficiency(2.0, 1.6) == pytest.approx(0.8)
    # Mean IS (-1 + 0.5) / 2 < 0: no efficiency, 0.0 even though OOS made money.
    assert walk_forward_efficiency([-1.0, 0.5], [0.2, 0.3]) == 0.0
    with pytest.raises(ValueError, match="as many"):
        walk_forward_efficiency([1.0, 2.0], [1.0])


def test_stitch_returns_concatenates_in_order() -> None:
    stitched = stitch_returns([np.array([0.01, -0.02]), np.array([0.03]), np.array([])])
    np.testing.assert_array_equal(stitched, [0.01, -0.02, 0.03])
    assert stitch_returns([]).size == 0


# --------------------------------------------------------------------------- sensitivity


def test_parameter_sensitivity_spearman_by_hand() -> None:
    scores = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    result = parameter_sensitivity(
        {
            "up": [10.0, 20.0, 30.0, 40.0, 50.0],
            "down": [5.0, 4.0, 3.0, 2.0, 1.0],
            "constant": [2.0] * 5,
            # ranks 1 3 2 5 4 vs 1..5: Σd² = 4, rho = 1 - 6·4 / (5·24) = 0.8
            "shuffled": [1.0, 3.0, 2.0, 5.0, 4.0],
            # average ranks 1.5 1.5 3.5 3.5 5, centred -1.5 -1.5 .5 .5 2 against -2 -1 0 1 2:
            # Σxy = 9, Σx² = 9, Σy² = 10 → rho = 9 / √90 = 3 / √10
            "ties": [1.0, 1.0, 2.0, 2.0, 3.0],
        },
        scores=scores,
    )
    assert list(result) == ["up", "down", "constant", "shuffled", "ties"]
    assert result["up"] == pytest.approx(1.0)
    assert result["down"] == pytest.approx(-1.0)
    assert result["constant"] == 0.0
    assert result["shuffled"] == pytest.approx(0.8)
    assert result["ties"] == pytest.approx(3 / math.sqrt(10))
    # Rank correlation ignores monotone rescaling of the scores.
    assert parameter_sensitivity({"p": [1.0, 3.0, 2.0, 5.0, 4.0]}, scores=np.exp(scores))[
        "p"
    ] == pytest.approx(0.8)
    assert parameter_sensitivity({"p": [1.0, 2.0]}, scores=[3.0, 3.0]) == {"p": 0.0}
    with pytest.raises(ValueError, match="'p'"):
        parameter_sensitivity({"p": [1.0, 2.0]}, scores=[1.0, 2.0, 3.0])
