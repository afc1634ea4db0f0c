"""Probability of backtest over-fitting by combinatorially symmetric cross-validation.

Bailey, Borwein, López de Prado & Zhu 2015, as pure functions over numpy arrays. Invalid inputs
raise ``ValueError`` with the reason instead of returning a placeholder.
"""

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from ffe_dagster.core.backtest.metrics import FloatArray


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
    subset, as in :mod:`ffe_dagster.core.backtest.metrics`) or the mean. All C(S, S/2) combinations
    are used when there are at most ``max_combinations``; otherwise ``max_combinations // 2`` of
    them are drawn without replacement with ``numpy.random.default_rng(seed)``, each together
    with its complement, so the sample keeps CSCV's symmetry (every in-sample set is also used
    out-of-sample). S = 16 gives 12,870 combinations, all used by default.
    """
    data = np.asarray(performance, dtype=np.float64)
    _check_cscv_inputs(data, n_blocks, max_combinations)
    return pbo_from_block_sums(
        BlockSums.of(data, n_blocks),
        metric=metric,
        max_combinations=max_combinations,
        seed=seed,
    )


# eq=False: numpy arrays make the generated __eq__/__hash__ ambiguous.
@dataclass(frozen=True, slots=True, eq=False)
class BlockSums:
    """What CSCV needs of T x N per-period values cut into S contiguous blocks of rows.

    Per block: its row count, and per trial the sum and the sum of squares of ``value - center``
    (``center`` = each trial's first value: it keeps the sums of squares accurate and makes an
    all-equal column exactly zero-variance). A metric over any union of blocks computed from these
    is the metric of exactly those rows, so aggregation never changes a ranking.
    """

    counts: FloatArray  # (S,)
    sums: FloatArray  # (S, N)
    squares: FloatArray  # (S, N)
    center: FloatArray  # (N,)

    @classmethod
    def of(cls, performance: FloatArray, n_blocks: int) -> "BlockSums":
        """Block statistics of a T x N array (a 1-D array is one trial), blocks as
        ``numpy.array_split`` cuts them (sizes differ by at most one row)."""
        data = np.asarray(performance, dtype=np.float64)
        if data.ndim == 1:
            data = data[:, None]
        if data.ndim != 2 or data.shape[0] < 2 * n_blocks:
            raise ValueError(f"{data.shape[0]} rows cannot fill {n_blocks} blocks of >= 2 rows")
        if not np.all(np.isfinite(data)):
            raise ValueError("performance holds NaN or infinite values")
        center = data[0].copy()
        blocks = np.array_split(data - center, n_blocks, axis=0)
        return cls(
            counts=np.array([b.shape[0] for b in blocks], dtype=np.float64),
            sums=np.stack([b.sum(axis=0) for b in blocks]),
            squares=np.stack([(b * b).sum(axis=0) for b in blocks]),
            center=center,
        )

    @classmethod
    def side_by_side(cls, columns: "Sequence[BlockSums]") -> "BlockSums":
        """The trials of several ``BlockSums`` over the same rows and blocks, as one."""
        if not columns or any(not np.array_equal(c.counts, columns[0].counts) for c in columns):
            raise ValueError("block statistics to join must cover the same rows and blocks")
        return cls(
            counts=columns[0].counts,
            sums=np.hstack([c.sums for c in columns]),
            squares=np.hstack([c.squares for c in columns]),
            center=np.concatenate([c.center for c in columns]),
        )


def pbo_from_block_sums(
    blocks: BlockSums,
    *,
    metric: Literal["sharpe", "mean"] = "sharpe",
    max_combinations: int = 20_000,
    seed: int = 0,
) -> OverfittingResult:
    """``probability_of_backtest_overfitting`` from per-block statistics (``BlockSums``), so a
    long series never has to be held as one T x N matrix."""
    n_blocks = blocks.counts.size
    n_trials = blocks.sums.shape[1]
    if n_trials < 2:
        raise ValueError(f"PBO needs N >= 2 trials, got {n_trials}")
    if n_blocks < 2 or n_blocks % 2:
        raise ValueError(f"n_blocks must be even and >= 2, got {n_blocks}")
    if max_combinations < 2:
        raise ValueError(f"max_combinations must be >= 2, got {max_combinations}")
    combos = _cscv_combinations(n_blocks, max_combinations, seed)
    in_sample = np.zeros((len(combos), n_blocks), dtype=bool)
    for i, combo in enumerate(combos):
        in_sample[i, list(combo)] = True
    # One matrix product per half: O(C·S·N) instead of re-reading T rows per combination.
    args = (blocks.counts, blocks.sums, blocks.squares, blocks.center, metric)
    is_metric = _subset_metric(in_sample, *args)
    oos_metric = _subset_metric(~in_sample, *args)

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
