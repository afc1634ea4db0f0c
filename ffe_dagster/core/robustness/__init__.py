"""Whether a choice is an edge or noise, as statistics over returns: deflated Sharpe, PBO by CSCV,
walk-forward windows and parameter sensitivity (a level's robustness run is ``study``'s).
"""

from ffe_dagster.core.robustness.deflated_sharpe import (
    EULER_MASCHERONI,
    TimestampPool,
    deflated_sharpe_from_returns,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
)
from ffe_dagster.core.robustness.pbo import (
    BlockSums,
    pbo_from_block_sums,
    probability_of_backtest_overfitting,
)
from ffe_dagster.core.robustness.walk_forward import (
    WalkForwardWindow,
    parameter_sensitivity,
    stitch_returns,
    walk_forward_efficiency,
    walk_forward_windows,
)

__all__ = [
    "EULER_MASCHERONI",
    "BlockSums",
    "TimestampPool",
    "WalkForwardWindow",
    "deflated_sharpe_from_returns",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "parameter_sensitivity",
    "pbo_from_block_sums",
    "probabilistic_sharpe_ratio",
    "probability_of_backtest_overfitting",
    "stitch_returns",
    "walk_forward_efficiency",
    "walk_forward_windows",
]
