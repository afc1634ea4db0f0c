"""Deflated Sharpe ratio and probabilistic Sharpe ratio, as pure functions over numpy arrays.

Deflated Sharpe ratio (Bailey & López de Prado 2014) and probabilistic Sharpe ratio (Bailey &
López de Prado 2012). The other over-fitting diagnostics of an optimization study live in
:mod:`ffe_dagster.core.robustness.pbo` (PBO by CSCV) and
:mod:`ffe_dagster.core.robustness.walk_forward` (walk-forward windows and efficiency,
parameter sensitivity).

Conventions: ``returns`` are simple per-bar returns, as in
:mod:`ffe_dagster.core.backtest.metrics`.
Sharpe ratios in the papers' formulas are per period (not annualized); functions that take
annualized values say so and take ``periods_per_year`` to de-annualize them. Kurtosis is the
ordinary (non-excess) kurtosis, 3 for a normal distribution. The normal distribution comes from
the standard library (``statistics.NormalDist``) so this module needs nothing beyond numpy.
Invalid inputs raise ``ValueError`` with the reason instead of returning a placeholder.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from ffe_dagster.core.backtest.metrics import sharpe_ratio

FloatArray = npt.NDArray[np.float64]

EULER_MASCHERONI = 0.5772156649015329
_NORMAL = NormalDist()


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

    The selected trial's Sharpe uses
    :func:`~ffe_dagster.core.backtest.metrics.sharpe_ratio` (ddof=1) so it matches
    the trials' Sharpe ratios; skewness ``m₃/m₂^1.5`` and kurtosis ``m₄/m₂²`` use
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


# eq=False: numpy arrays make the generated __eq__/__hash__ ambiguous.
@dataclass(frozen=True, slots=True, eq=False)
class TimestampPool:
    """How a level's bars pool into one portfolio return per timestamp.

    Simultaneous bars of several instruments (BTC and ETH at the same hour) are one observation of
    the portfolio, not two: each timestamp's return is the mean of the returns of the segments
    that have a bar then (every segment trades the same starting capital, so this is the equally
    weighted portfolio's return). ``ts`` is sorted; ``periods_per_year`` annualizes the pooled
    series: per timestamp the largest bars-per-year of the instruments trading then (the union of
    their calendars), averaged over the timestamps.
    """

    ts: npt.NDArray[np.datetime64]
    inverse: npt.NDArray[np.int64]
    counts: FloatArray
    periods_per_year: float

    @classmethod
    def of(cls, ts: npt.NDArray[np.datetime64], bars_per_year: FloatArray) -> "TimestampPool":
        """The pool of bars stamped ``ts`` (any order) whose instruments have ``bars_per_year``."""
        if ts.shape != bars_per_year.shape or ts.ndim != 1 or ts.size == 0:
            raise ValueError("ts and bars_per_year must be 1-D arrays of the same non-zero length")
        unique, inverse = np.unique(ts, return_inverse=True)
        factor = np.zeros(unique.size, dtype=np.float64)
        np.maximum.at(factor, inverse, bars_per_year)
        return cls(
            ts=unique,
            inverse=inverse.astype(np.int64),
            counts=np.bincount(inverse, minlength=unique.size).astype(np.float64),
            periods_per_year=float(factor.mean()),
        )

    @property
    def n_obs(self) -> int:
        """Effective observations: distinct timestamps."""
        return int(self.ts.size)

    def pool(self, returns: FloatArray) -> FloatArray:
        """One portfolio return per timestamp (in time order) from per-bar ``returns``."""
        r = np.asarray(returns, dtype=np.float64)
        if r.shape != self.inverse.shape:
            raise ValueError(f"{r.size} returns for a pool of {self.inverse.size} bars")
        return np.bincount(self.inverse, weights=r, minlength=self.counts.size) / self.counts
