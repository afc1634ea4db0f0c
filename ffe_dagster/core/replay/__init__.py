"""The replay's pure parts: the cycle timeline, the cut of the bars before each cycle, and what a
replayed choice earned.
"""

from ffe_dagster.core.replay.equity import (
    DAYS_PER_YEAR,
    Trading,
    buy_and_hold,
    capital_shares,
    live_rows,
    portfolio_returns,
    summarize,
    trade_period,
    weighted_pnl,
)
from ffe_dagster.core.replay.timeline import (
    Cadence,
    curriculum_at,
    cycle_times,
    level_data_before,
    newest_bar,
    rows_before,
)

__all__ = [
    "DAYS_PER_YEAR",
    "Cadence",
    "Trading",
    "buy_and_hold",
    "capital_shares",
    "curriculum_at",
    "cycle_times",
    "level_data_before",
    "live_rows",
    "newest_bar",
    "portfolio_returns",
    "rows_before",
    "summarize",
    "trade_period",
    "weighted_pnl",
]
