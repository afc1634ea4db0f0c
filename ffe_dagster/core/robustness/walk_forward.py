"""Walk-forward analysis and parameter sensitivity, as pure functions over numpy arrays.

Walk-forward train/test windows, walk-forward efficiency, stitching the out-of-sample returns,
and the rank correlation of each parameter with the score. Returns are simple per-bar returns, as
in :mod:`ffe_dagster.core.backtest.metrics`. Invalid inputs raise ``ValueError`` with the reason
instead of returning a placeholder.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ffe_dagster.core.backtest.metrics import FloatArray


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
    record to feed :func:`~ffe_dagster.core.backtest.metrics.compute_metrics` or the DSR.
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
