"""Entry-signal strategies.

A strategy turns a close-price array into signals in {-1, 0, +1} per bar: +1 asks to be long from
this bar's close, -1 to be short. Direction filtering (long-only, short-only) is the backtest's job,
so one strategy serves every curriculum level.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ffe_dagster.core.metrics import FloatArray

Signals = npt.NDArray[np.int8]
SignalFn = Callable[[FloatArray, Mapping[str, float]], Signals]


def rolling_mean(values: FloatArray, window: int) -> FloatArray:
    """Trailing simple moving average; the first ``window - 1`` values are NaN."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    out = np.full(values.shape, np.nan)
    if values.size < window:
        return out
    csum = np.cumsum(np.concatenate(([0.0], values)))
    out[window - 1 :] = (csum[window:] - csum[:-window]) / window
    return out


def sma_crossover_signals(close: FloatArray, params: Mapping[str, float]) -> Signals:
    """+1 on the bar where the fast SMA crosses above the slow one, -1 where it crosses below.

    Parameters: ``fast_window`` and ``slow_window`` (bars). The slow window is forced above the
    fast one, because a crossover of a window with itself never fires.
    """
    fast = int(params["fast_window"])
    slow = max(int(params["slow_window"]), fast + 1)
    diff = rolling_mean(close, fast) - rolling_mean(close, slow)
    above = diff > 0.0
    valid = ~np.isnan(diff)
    prev_valid = np.concatenate(([False], valid[:-1]))
    prev_above = np.concatenate(([False], above[:-1]))
    both = valid & prev_valid
    signals = np.zeros(close.shape, dtype=np.int8)
    signals[both & above & ~prev_above] = 1
    signals[both & ~above & prev_above] = -1
    return signals


@dataclass(frozen=True, slots=True)
class EntryStrategy:
    """A named signal function and the names of the parameters it reads."""

    name: str
    signal_fn: SignalFn
    param_names: tuple[str, ...]

    def signals(self, close: FloatArray, params: Mapping[str, float]) -> Signals:
        """Signals for ``close`` with the strategy's parameters picked from ``params``."""
        return self.signal_fn(close, {k: params[k] for k in self.param_names})


STRATEGIES: Mapping[str, EntryStrategy] = {
    "sma_crossover": EntryStrategy(
        name="sma_crossover",
        signal_fn=sma_crossover_signals,
        param_names=("fast_window", "slow_window"),
    ),
}


def get_strategy(name: str) -> EntryStrategy:
    """The built-in strategy called ``name``; a clear error lists the known ones."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown entry strategy {name!r}; known: {sorted(STRATEGIES)}") from None
