"""vectorbt's simulation kernel goes through numba's cache, so a process loads it instead of
compiling it again (``reference.cached_from_signals_kernel``)."""

from pathlib import Path
from typing import Any

import numba
import numpy as np
import pytest
from numba.core.caching import FunctionCache
from vectorbt.portfolio import nb as vbt_nb

from ffe_dagster.core.backtest.reference import (
    CostModel,
    Direction,
    StopMode,
    TradeParams,
    cached_from_signals_kernel,
    simulate,
)
from tests.core.test_backtest import SEGMENT  # the hand-worked ten bars


def test_the_kernel_is_stored_in_numbas_cache_and_loads_from_it() -> None:
    signals = np.zeros(10, dtype=np.int8)
    signals[1] = 1
    params = TradeParams(2.0, 2.0, 50.0, 2.0, StopMode.FIXED)
    portfolio = simulate(
        SEGMENT, signals, direction=Direction.LONG, params=params, costs=CostModel(0.0)
    )
    # The hand-worked trade of tests/core/test_backtest.py: 5,000 / 101 * 2.02 = 100.0.
    assert portfolio.get_trades().records["pnl"].tolist() == pytest.approx([100.0], rel=1e-9)

    kernel: Any = vbt_nb.simulate_from_signals_nb  # a numba dispatcher; its stubs say function
    cache = kernel._cache
    assert isinstance(cache, FunctionCache)  # vectorbt's own @njit has a NullCache
    assert list(Path(cache._cache_path).glob("nb.simulate_from_signals_nb-*.nbi"))
    # What the next process does: a new dispatcher of the same function finds the compiled
    # overload in the cache instead of compiling it.
    fresh = numba.njit(cache=True)(kernel.py_func)
    fresh.compile(kernel.signatures[0])
    assert fresh.stats.cache_hits, fresh.stats

    cached_from_signals_kernel()  # idempotent: the cached kernel is kept, not compiled again
    assert vbt_nb.simulate_from_signals_nb is kernel
