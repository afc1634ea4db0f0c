"""Over-fitting diagnostics for an optimization study, as pure functions over numpy arrays.

Deflated Sharpe ratio (Bailey & López de Prado 2014), probability of backtest over-fitting by
combinatorially symmetric cross-validation (Bailey, Borwein, López de Prado & Zhu 2015),
walk-forward windows and efficiency, and the rank correlation of each parameter with the score.

Conventions: ``returns`` are simple per-bar returns, as in :mod:`ffe_dagster.core.metrics`.
Sharpe ratios in the papers' formulas are per period (not annualized); functions that take
annualized values say so and take ``periods_per_year`` to de-annualize them. Kurtosis is the
ordinary (non-excess) kurtosis, 3 for a normal distribution. The normal distribution comes from
the standard library (``statistics.NormalDist``) so this module needs nothing beyond numpy.
Invalid inputs raise ``ValueError`` with the reason instead of returning a placeholder.
"""

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np
import numpy.typing as npt

from ffe_dagster.core.metrics import sharpe_ratio

FloatArray = npt.NDArray[np.float64]

EULER_MASCHERONI = 0.5772156649015329
_NORMAL = NormalDist()


# --------------------------------------------------------------------------- deflated Sharpe


def probabilistic_sharpe_ratio(
    sr: float, *, sr_benchmark: float, n_obs: int, skew: float, kurtosis: float
) -> float:
    """Probabilistic Sharpe ratio: P(true Sharpe > ``sr_benchmark``), Bailey & López de Prado 2012.

    ``PSR = Φ[(SR - SR*) √(T - 1) / √(1 - skew SR + (kurt - 1)/4 SR²)]`` with SR and SR* per period
    (not annualized), T = ``n_obs`` returns, ``skew`` and kurt = ``kurtosis`` (non-excess, 3 for
    normal returns). Negative skew and fat tails widen the Sharpe ratio's standard error
    and so lower the PSR of a positive Sharpe.

    Raises ``ValueError`` when ``n_obs < 2`` or the variance term is not positive (it is
    ``≥ (1 - skew SR / 2)² ≥ 0`` for any real distribution, since kurt ≥ 1 + skew²).
    """
    if n_obs < 2:
        raise ValueError(f"PSR needs at least 2 observations, got n_obs={n_obs}")
    variance_term = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    if not variance_term > 0.0:
        raise ValueError(
            f"PSR variance term 1 - skew*sr + (kurtosis-1)/4*sr^2 = {variance_term} is not "
            f"positive (sr={sr}, skew={skew}, kurtosis={kurtosis}); are the moments consistent?"
        )
    z = (sr - sr_benchmark) * math.sqrt(n_obs - 1) / math.sqrt(variance_term)
    return _NORMAL.cdf(z)


def expected_max_sharpe(n_trials: int, *, variance_of_sharpes: float) -> float:
    """Expected maximum Sharpe ratio of ``n_trials`` skill-less trials (False Strategy Theorem).

    ``E[max SR] ≈ √V · ((1 - c) Φ⁻¹(1 - 1/N) + c Φ⁻¹(1 - 1/(N e)))`` with c the
    Euler-Mascheroni constant, N = ``n_trials`` independent trials whose true Sharpe is 0, and
    V = ``variance_of_sharpes`` the variance of their estimated Sharpe ratios (Bailey & López de
    Prado 2014, eq. 2). The result is in the units of √V: pass a per-period variance for a
    per-period threshold. One trial involves no selection, so it returns 0.0.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if variance_of_sharpes < 0.0 or not math.isfinite(variance_of_sharpes):
        raise ValueError(f"variance_of_sharpes must be finite and >= 0, got {variance_of_sharpes}")
    if n_trials == 1:
        return 0.0  # Φ⁻¹(0) is -inf; the formula only describes a maximum over several trials.
    z = (1.0 - EULER_MASCHERONI) * _NORMAL.inv_cdf(1.0 - 1.0 / n_trials)
    z += EULER_MASCHERONI * _NORMAL.inv_cdf(1.0 - 1.0 / (n_trials * math.e))
    return math.sqrt(variance_of_sharpes) * z


def deflated_sharpe_ratio(
    sr: float,
    *,
    n_trials: int,
    variance_of_sharpes: float,
    n_obs: int,
    skew: float,
    kurtosis: float,
    periods_per_year: float = 1.0,
) -> float:
    """Deflated Sharpe ratio of the best of ``n_trials`` trials (Bailey & López de Prado 2014).

    ``DSR = PSR(SR₀)`` with the benchmark ``SR₀ = expected_max_sharpe(N, V)``: the probability
    that the selected strategy's true Sharpe beats the best Sharpe that ``N`` skill-less trials
    would show by luck. ``sr`` and ``variance_of_sharpes`` (the variance of the Sharpe ratios
    across all trials) are annualized with ``periods_per_year`` and de-annualized here
    (``sr / √P``, ``V / P``); leave ``periods_per_year=1`` to pass per-period values. ``n_obs``,
    ``skew`` and ``kurtosis`` (non-excess) describe the selected trial's per-period returns.

    ``n_trials`` should be the number of independent trials; correlated Optuna trials make the
    raw count an over-estimate, which errs on the side of a lower DSR. The paper's example
    (N = 100, V = 0.5, SR = 2.5 annualized, T = 1250, P = 250, skew = -3, kurt = 10) gives 0.9004.
    """
    if periods_per_year <= 0.0:
        raise ValueError(f"periods_per_year must be > 0, got {periods_per_year}")
    sr_star = expected_max_sharpe(
        n_trials, variance_of_sharpes=variance_of_sharpes / periods_per_year
    )
    return probabilistic_sharpe_ratio(
        sr / math.sqrt(periods_per_year),
        sr_benchmark=sr_star,
        n_obs=n_obs,
        skew=skew,
        kurtosis=kurtosis,
    )


@dataclass(frozen=True, slots=True)
class DeflatedSharpe:
    """The deflated Sharpe ratio of a selected trial and the inputs it was computed from.

    ``sharpe``, ``sr_star`` and ``variance_of_sharpes`` are annualized with
    ``periods_per_year``; ``skew`` and ``kurtosis`` (non-excess) are of the per-bar returns.
    """

    dsr: float
    """P(true Sharpe > sr_star): the deflated Sharpe ratio."""
    psr: float
    """P(true Sharpe > 0): the probabilistic Sharpe ratio against a zero benchmark."""
    sharpe: float
    sr_star: float
    """Expected maximum Sharpe of ``n_trials`` skill-less trials (the DSR's benchmark)."""
    n_trials: int
    variance_of_sharpes: float
    n_obs: int
    skew: float
    kurtosis: float
    periods_per_year: float


def deflated_sharpe_from_returns(
    returns: FloatArray,
    *,
    trial_sharpes: Sequence[float] | FloatArray,
    periods_per_year: float,
    n_trials: int | None = None,
) -> DeflatedSharpe:
    """DSR of the selected trial from its per-bar ``returns`` and every trial's annualized Sharpe.

    The selected trial's Sharpe uses :func:`~ffe_dagster.core.metrics.sharpe_ratio` (ddof=1) so
    it matches the trials' Sharpe ratios; skewness ``m₃/m₂^1.5`` and kurtosis ``m₄/m₂²`` use
    central sample moments, as in the paper. ``trial_sharpes`` (annualized, including the
    selected trial) gives ``V`` as their sample variance (ddof=1) and, unless ``n_trials``
    overrides it with an estimate of the independent trials, ``N`` as their count.

    Raises ``ValueError`` for fewer than 2 returns, constant or non-finite returns (the moments
    are undefined), no trial Sharpe ratios, or a non-positive ``periods_per_year``.
    """
    r = np.asarray(returns, dtype=np.float64)
    sharpes = np.asarray(trial_sharpes, dtype=np.float64)
    if r.ndim != 1 or r.size < 2 or not np.all(np.isfinite(r)):
        raise ValueError("returns must be a 1-D array of at least 2 finite values")
    if sharpes.ndim != 1 or sharpes.size == 0 or not np.all(np.isfinite(sharpes)):
        raise ValueError("trial_sharpes must hold at least one finite Sharpe ratio")
    if periods_per_year <= 0.0:
        raise ValueError(f"periods_per_year must be > 0, got {periods_per_year}")
    centered = r - r.mean()
    m2 = float((centered**2).mean())
    if m2 == 0.0:
        raise ValueError("returns are constant: Sharpe, skewness and kurtosis are undefined")
    skew = float((centered**3).mean()) / m2**1.5
    kurtosis = float((centered**4).mean()) / m2**2
    n = int(sharpes.size) if n_trials is None else n_trials
    variance = float(np.var(sharpes, ddof=1)) if sharpes.size > 1 else 0.0
    sharpe = sharpe_ratio(r, periods_per_year=periods_per_year)
    per_period_sr = sharpe / math.sqrt(periods_per_year)
    sr_star = expected_max_sharpe(n, variance_of_sharpes=variance / periods_per_year)
    return DeflatedSharpe(
        dsr=probabilistic_sharpe_ratio(
            per_period_sr, sr_benchmark=sr_star, n_obs=r.size, skew=skew, kurtosis=kurtosis
        ),
        psr=probabilistic_sharpe_ratio(
            per_period_sr, sr_benchmark=0.0, n_obs=r.size, skew=skew, kurtosis=kurtosis
        ),
        sharpe=sharpe,
        sr_star=sr_star * math.sqrt(periods_per_year),
        n_trials=n,
        variance_of_sharpes=variance,
        n_obs=int(r.size),
        skew=skew,
        kurtosis=kurtosis,
        periods_per_year=periods_per_year,
    )


# --------------------------------------------------------------------------- CSCV / PBO


# eq=False: numpy arrays make the generated __eq__/__hash__ ambiguous.
@dataclass(frozen=True, slots=True, eq=False)
class OverfittingResult:
    """Probability of backtest over-fitting and the per-combination CSCV detail.

    Arrays have one entry per combination (read-only) and follow ``combinations`` order.
    """

    pbo: float
    """Share of combinations whose logit is <= 0: the in-sample best was at best median OOS."""
    logits: FloatArray
    """λ = ln(ω / (1 - ω)), ω = out-of-sample relative rank of the in-sample best trial."""
    n_combinations: int
    is_performance: FloatArray
    """In-sample metric of the in-sample best trial."""
    oos_performance: FloatArray
    """Out-of-sample metric of the same trial."""
    degradation_slope: float
    """Least-squares slope of ``oos_performance`` on ``is_performance`` (< 0: over-fitting)."""
    degradation_intercept: float
    prob_oos_loss: float
    """Share of combinations whose in-sample best has a negative out-of-sample metric."""
    combinations: tuple[tuple[int, ...], ...]
    """Row blocks used in-sample by each combination (the others are out-of-sample)."""


def probability_of_backtest_overfitting(
    performance: FloatArray,
    *,
    n_blocks: int = 16,
    metric: Literal["sharpe", "mean"] = "sharpe",
    max_combinations: int = 20_000,
    seed: int = 0,
) -> OverfittingResult:
    """Probability of backtest over-fitting by CSCV (Bailey, Borwein, López de Prado & Zhu 2015).

    ``performance`` is T x N: one row per period (e.g. bar returns), one column per trial. The
    rows are cut in time order into ``S = n_blocks`` contiguous blocks (sizes differ by at most
    one row when S does not divide T). For each choice ``c`` of S/2 blocks as the in-sample set,
    the complement being out-of-sample: take the trial ``n*`` with the best in-sample metric
    (first one on ties), its out-of-sample rank ``r`` among the N trials (average rank on ties,
    1 = worst), ``ω = r / (N + 1)`` and ``λ_c = ln(ω / (1 - ω))``. Then
    ``PBO = #{λ_c ≤ 0} / #combinations``: how often the in-sample winner lands in the bottom
    half (median included) out-of-sample. Skill-less trials give PBO ≈ 0.5 (for even N).

    ``metric`` is the per-period Sharpe ratio (mean / std with ddof=1; 0.0 for a constant
    subset, as in :mod:`ffe_dagster.core.metrics`) or the mean. All C(S, S/2) combinations are
    used when there are at most ``max_combinations``; otherwise ``max_combinations // 2`` of
    them are drawn without replacement with ``numpy.random.default_rng(seed)``, each together
    with its complement, so the sample keeps CSCV's symmetry (every in-sample set is also used
    out-of-sample). S = 16 gives 12,870 combinations, all used by default.
    """
    data = np.asarray(performance, dtype=np.float64)
    _check_cscv_inputs(data, n_blocks, max_combinations)
    n_trials = data.shape[1]
    combos = _cscv_combinations(n_blocks, max_combinations, seed)
    in_sample = np.zeros((len(combos), n_blocks), dtype=bool)
    for i, combo in enumerate(combos):
        in_sample[i, list(combo)] = True

    # Per-block sums, then one matrix product per half: O(C·S·N) instead of re-reading T rows
    # for each combination. Centering on the first row keeps the sums of squares accurate and
    # makes an all-equal column exactly zero-variance.
    blocks = np.array_split(data - data[0], n_blocks, axis=0)
    counts = np.array([b.shape[0] for b in blocks], dtype=np.float64)
    sums = np.stack([b.sum(axis=0) for b in blocks])
    squares = np.stack([(b * b).sum(axis=0) for b in blocks])
    is_metric = _subset_metric(in_sample, counts, sums, squares, data[0], metric)
    oos_metric = _subset_metric(~in_sample, counts, sums, squares, data[0], metric)

    rows = np.arange(len(combos))
    best = np.argmax(is_metric, axis=1)
    chosen_oos = oos_metric[rows, best]
    below = np.count_nonzero(oos_metric < chosen_oos[:, None], axis=1)
    tied = np.count_nonzero(oos_metric == chosen_oos[:, None], axis=1)  # includes itself
    omega = (below + (tied + 1) / 2.0) / (n_trials + 1)
    logits = np.log(omega / (1.0 - omega))
    chosen_is = is_metric[rows, best]
    slope, intercept = _least_squares_line(chosen_is, chosen_oos)
    for array in (logits, chosen_is, chosen_oos):
        array.setflags(write=False)
    return OverfittingResult(
        pbo=np.count_nonzero(logits <= 0.0) / len(combos),
        logits=logits,
        n_combinations=len(combos),
        is_performance=chosen_is,
        oos_performance=chosen_oos,
        degradation_slope=slope,
        degradation_intercept=intercept,
        prob_oos_loss=np.count_nonzero(chosen_oos < 0.0) / len(combos),
        combinations=combos,
    )


def _check_cscv_inputs(data: FloatArray, n_blocks: int, max_combinations: int) -> None:
    if data.ndim != 2 or data.shape[1] < 2:
        raise ValueError(f"performance must be T x N with N >= 2 trials, got shape {data.shape}")
    if n_blocks < 2 or n_blocks % 2:
        raise ValueError(f"n_blocks must be even and >= 2, got {n_blocks}")
    if data.shape[0] < 2 * n_blocks:
        raise ValueError(f"{data.shape[0]} rows cannot fill {n_blocks} blocks of >= 2 rows each")
    if max_combinations < 2:
        raise ValueError(f"max_combinations must be >= 2, got {max_combinations}")
    if not np.all(np.isfinite(data)):
        raise ValueError("performance holds NaN or infinite values")


def _cscv_combinations(
    n_blocks: int, max_combinations: int, seed: int
) -> tuple[tuple[int, ...], ...]:
    half = n_blocks // 2
    if math.comb(n_blocks, half) <= max_combinations:
        return tuple(itertools.combinations(range(n_blocks), half))
    # Sample among the sets containing block 0 (exactly one of each complementary pair), then
    # add each one's complement. There are C(S, S/2)/2 > max_combinations/2 such sets, so the
    # rejection loop ends.
    rng = np.random.default_rng(seed)
    canonical: set[tuple[int, ...]] = set()
    while len(canonical) < max_combinations // 2:
        rest = rng.choice(np.arange(1, n_blocks), size=half - 1, replace=False)
        canonical.add((0, *sorted(int(b) for b in rest)))
    combos: list[tuple[int, ...]] = []
    for combo in sorted(canonical):
        combos.append(combo)
        combos.append(tuple(b for b in range(n_blocks) if b not in combo))
    return tuple(combos)


def _subset_metric(
    member: npt.NDArray[np.bool_],
    counts: FloatArray,
    sums: FloatArray,
    squares: FloatArray,
    center: FloatArray,
    metric: Literal["sharpe", "mean"],
) -> FloatArray:
    weights = member.astype(np.float64)
    n = (weights @ counts)[:, None]
    s1 = weights @ sums
    mean = center + s1 / n
    if metric == "mean":
        return mean
    mean_square = (weights @ squares) / n
    var = (mean_square - (s1 / n) ** 2) * n / (n - 1.0)
    # Rounding leaves ~1e-16 relative residue on a constant subset; treat it as zero variance.
    flat = var <= 1e-12 * mean_square
    return np.where(flat, 0.0, mean / np.sqrt(np.where(flat, 1.0, var)))


def _least_squares_line(x: FloatArray, y: FloatArray) -> tuple[float, float]:
    dx = x - x.mean()
    sxx = float(dx @ dx)
    slope = float(dx @ (y - y.mean())) / sxx if sxx > 0.0 else 0.0
    return slope, float(y.mean() - slope * x.mean())


# --------------------------------------------------------------------------- walk-forward


@dataclass(frozen=True, slots=True)
class WalkForwardWindow:
    """One walk-forward step as half-open bar ranges ``[start, end)``; test follows train."""

    train_start: int
    train_end: int
    test_start: int
    test_end: int

    @property
    def train(self) -> slice:
        """Slice of the training bars."""
        return slice(self.train_start, self.train_end)

    @property
    def test(self) -> slice:
        """Slice of the test (out-of-sample) bars."""
        return slice(self.test_start, self.test_end)


def walk_forward_windows(
    n_bars: int,
    *,
    n_windows: int,
    train_bars: int | None = None,
    train_fraction: float | None = None,
    test_bars: int | None = None,
    anchored: bool = False,
) -> tuple[WalkForwardWindow, ...]:
    """Walk-forward train/test windows over ``n_bars`` bars, in time order.

    The ``n_windows`` test windows are consecutive, non-overlapping, ``test_bars`` long and end
    at the last bar, so the most recent data is always tested; each training window ends where
    its test window starts. Rolling windows train on the ``train_bars`` bars before the test;
    ``anchored`` windows train on everything from bar 0. Bars before the first training window
    are left unused.

    Give exactly one of ``train_bars`` and ``train_fraction`` (the train share of each
    train + test window, 0 < f < 1). Without ``test_bars`` the windows fill the series:
    ``test_bars = (n_bars - train_bars) // n_windows``, or with a fraction
    ``test_bars = ⌊n_bars / (n_windows + f / (1 - f))⌋`` and ``train_bars`` the rest. With
    ``test_bars`` and a fraction, ``train_bars = round(test_bars · f / (1 - f))``.
    """
    train, test = _window_sizes(n_bars, n_windows, train_bars, train_fraction, test_bars)
    first_test = n_bars - n_windows * test
    windows: list[WalkForwardWindow] = []
    for k in range(n_windows):
        test_start = first_test + k * test
        windows.append(
            WalkForwardWindow(
                train_start=0 if anchored else test_start - train,
                train_end=test_start,
                test_start=test_start,
                test_end=test_start + test,
            )
        )
    return tuple(windows)


def _window_sizes(
    n_bars: int,
    n_windows: int,
    train_bars: int | None,
    train_fraction: float | None,
    test_bars: int | None,
) -> tuple[int, int]:
    if n_windows < 1:
        raise ValueError(f"n_windows must be >= 1, got {n_windows}")
    if (train_bars is None) == (train_fraction is None):
        raise ValueError("give exactly one of train_bars and train_fraction")
    if train_fraction is not None:
        if not 0.0 < train_fraction < 1.0:
            raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
        odds = train_fraction / (1.0 - train_fraction)
        if test_bars is None:
            test_bars = math.floor(n_bars / (n_windows + odds))
            train_bars = n_bars - n_windows * test_bars
        else:
            train_bars = round(test_bars * odds)
    assert train_bars is not None  # one of the two was given, checked above
    if test_bars is None:
        test_bars = (n_bars - train_bars) // n_windows
    if train_bars < 1 or test_bars < 1:
        raise ValueError(f"windows too small: train_bars={train_bars}, test_bars={test_bars}")
    if train_bars + n_windows * test_bars > n_bars:
        raise ValueError(
            f"train_bars={train_bars} + {n_windows} x test_bars={test_bars} exceeds {n_bars} bars"
        )
    return train_bars, test_bars


def walk_forward_efficiency(
    in_sample: float | Sequence[float] | FloatArray,
    out_of_sample: float | Sequence[float] | FloatArray,
) -> float:
    """Walk-forward efficiency: ``WFE = mean(out-of-sample) / mean(in-sample)``.

    Pass an annualized metric (Sharpe ratio or annualized return) per window, so short test
    windows and long training windows compare on one scale; WFE = 1 means the out-of-sample
    windows kept all of the in-sample performance, and values around 0.5 or more are commonly
    read as robust (Pardo, *The Evaluation and Optimization of Trading Strategies*, 2008).
    Means are taken before dividing so one window with a near-zero in-sample value cannot
    dominate. A non-positive mean in-sample value has no efficiency to speak of (the ratio's
    sign would flip), so it gives 0.0, which fails any WFE threshold.
    """
    is_values = np.atleast_1d(np.asarray(in_sample, dtype=np.float64))
    oos_values = np.atleast_1d(np.asarray(out_of_sample, dtype=np.float64))
    if is_values.ndim != 1 or is_values.shape != oos_values.shape or is_values.size == 0:
        raise ValueError(
            f"need as many in-sample as out-of-sample values, got {is_values.shape} and "
            f"{oos_values.shape}"
        )
    if not (np.all(np.isfinite(is_values)) and np.all(np.isfinite(oos_values))):
        raise ValueError("walk-forward metrics hold NaN or infinite values")
    mean_is = float(is_values.mean())
    if mean_is <= 0.0:
        return 0.0
    return float(oos_values.mean()) / mean_is


def stitch_returns(segments: Sequence[FloatArray]) -> FloatArray:
    """The out-of-sample returns of consecutive walk-forward windows as one series, in order.

    Test windows do not overlap, so concatenating them gives one honest out-of-sample track
    record to feed :func:`~ffe_dagster.core.metrics.compute_metrics` or the DSR.
    """
    if not segments:
        return np.empty(0, dtype=np.float64)
    arrays = [np.asarray(s, dtype=np.float64) for s in segments]
    if any(a.ndim != 1 for a in arrays):
        raise ValueError("every out-of-sample segment must be a 1-D array of returns")
    return np.concatenate(arrays)


# --------------------------------------------------------------------------- sensitivity


def parameter_sensitivity(
    values: Mapping[str, Sequence[float] | FloatArray],
    *,
    scores: Sequence[float] | FloatArray,
) -> dict[str, float]:
    """Spearman rank correlation of each parameter with the score, across trials.

    ``rho = Pearson(rank(x), rank(score))`` with average ranks for ties, in [-1, 1]: the sign says
    which way the score moves with the parameter, the magnitude how monotonically. A constant
    parameter (or constant scores) has no ranking to correlate, so it gives 0.0. Parameters keep
    the mapping's order. Values must be numeric and finite; filter failed trials first.
    """
    score = np.asarray(scores, dtype=np.float64)
    if score.ndim != 1 or not np.all(np.isfinite(score)):
        raise ValueError("scores must be a 1-D array of finite values")
    score_ranks = _average_ranks(score)
    result: dict[str, float] = {}
    for name, column in values.items():
        x = np.asarray(column, dtype=np.float64)
        if x.shape != score.shape or not np.all(np.isfinite(x)):
            raise ValueError(
                f"parameter {name!r} needs {score.size} finite values, got shape {x.shape}"
            )
        result[name] = _pearson(_average_ranks(x), score_ranks)
    return result


def _average_ranks(x: FloatArray) -> FloatArray:
    # 1-based ranks; tied values share the mean of the ranks they span.
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    average = np.cumsum(counts) - (counts - 1) / 2.0
    return average[inverse].astype(np.float64)


def _pearson(x: FloatArray, y: FloatArray) -> float:
    dx = x - x.mean()
    dy = y - y.mean()
    denominator = math.sqrt(float(dx @ dx) * float(dy @ dy))
    if denominator == 0.0:
        return 0.0
    return float(dx @ dy) / denominator
