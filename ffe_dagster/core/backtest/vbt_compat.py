"""vectorbt's floating-point guards and fill rules, for the engine to round exactly as it does.

Each function copies one of vectorbt's numba helpers (named in its docstring) with the same
tolerances, so the engine's trades and returns match ``Portfolio.from_signals`` to the last bits.
"""

import math

import numba
import numpy as np

REL_TOL = 1e-9
ABS_TOL = 1e-12


@numba.njit(cache=True, inline="always")
def is_close(a: float, b: float) -> bool:
    """vectorbt's is_close_nb: equal within a relative 1e-9 or an absolute 1e-12."""
    if math.isnan(a) or math.isnan(b) or math.isinf(a) or math.isinf(b):
        return False
    if a == b:
        return True
    return abs(a - b) <= max(REL_TOL * max(abs(a), abs(b)), ABS_TOL)


@numba.njit(cache=True, inline="always")
def add(a: float, b: float) -> float:
    """vectorbt's add_nb: a sum that is zero within tolerance is exactly zero."""
    if np.sign(a) != np.sign(b):
        if is_close(abs(a), abs(b)):
            return 0.0
    elif is_close(a + b, 0.0):
        return 0.0
    return a + b


@numba.njit(cache=True, inline="always")
def stop_price(
    position: float, ref: float, stop: float, open_: float, low: float, high: float, below: bool
) -> float:
    """vectorbt's get_stop_price_nb: the fill price of a stop hit in this bar, else NaN."""
    if (position > 0 and below) or (position < 0 and not below):
        level = ref * (1 - stop)
        if open_ <= level:
            return open_
        if low <= level <= high:
            return level
        return np.nan
    level = ref * (1 + stop)
    if level <= open_:
        return open_
    if low <= level <= high:
        return level
    return np.nan


@numba.njit(cache=True, inline="always")
def trade_pnl(
    size: float,
    entry_price: float,
    exit_price: float,
    entry_fees: float,
    exit_fees: float,
    short: bool,
) -> float:
    """vectorbt's get_trade_stats_nb PnL: value change (sign flipped for shorts) less fees."""
    diff = add(size * exit_price, -(size * entry_price))
    if diff != 0 and short:
        diff = -diff
    return diff - entry_fees - exit_fees
