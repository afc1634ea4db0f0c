"""Which bar partitions a cycle requests: the ones whose bars or rules changed, and the open one.

``plan_ingest`` reads what each partition's last passing validation saw (``partition_state`` in
the warehouse), fingerprints the bars the source holds now (a file source's file; for a remote
venue, the stored bars of days fetched completely, since a venue's past bars do not change) and
applies ``core.data.partition_state.stale_windows``. The CLI then requests one single-run backfill
over the stale range, or none. A partition launched by hand (UI, ``dagster asset materialize``)
is recomputed whatever its state: the plan only decides what a cycle asks for.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from ffe_dagster.assets.acquisition import source_kind
from ffe_dagster.config import Universe
from ffe_dagster.core.data.bars import deduplicate_bars
from ffe_dagster.core.data.partition_state import (
    WindowPlan,
    bars_fingerprint,
    rules_key,
    stale_windows,
)
from ffe_dagster.partitions import (
    bar_partitions,
    partition_key_of,
    split_windows,
    window_start,
    windows_by_instrument,
)
from ffe_dagster.resources.market_data import MarketDataResource
from ffe_dagster.resources.warehouse import WarehouseResource

_DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class IngestPlan:
    """The cycle's ingest: per instrument the decision, and the time-window keys to request
    (first and last, every instrument in between; None when nothing is due)."""

    instruments: tuple[WindowPlan, ...]
    first_window: str | None
    last_window: str | None
    partitions: int

    @property
    def unchanged(self) -> int:
        """Partitions not requested because nothing about them changed."""
        return sum(p.unchanged for p in self.instruments)

    def describe(self) -> str:
        """One line for the terminal: what is requested and why."""
        if self.first_window is None:
            return f"ingest: all {self.partitions} bar partitions unchanged, nothing to fetch"
        why = "; ".join(
            f"{p.instrument} from {p.stale[0]:%Y-%m-%d} ({p.reasons[p.stale[0]]})"
            for p in self.instruments
            if p.stale
        )
        return (
            f"ingest: windows {self.first_window} .. {self.last_window} "
            f"({self.unchanged} of {self.partitions} partitions unchanged); {why}"
        )


def plan_ingest(
    universe: Universe,
    warehouse: WarehouseResource,
    market_data: MarketDataResource,
    *,
    materialized: set[str],
    now: datetime,
) -> IngestPlan:
    """The bar partitions a cycle at ``now`` must ingest (see the module docstring);
    ``materialized`` holds the ``validated_bars`` partition keys the Dagster instance has."""
    keys = bar_partitions(universe).get_partition_keys(current_time=now)
    grain = universe.partition_grain
    plans: list[WindowPlan] = []
    total = 0
    for key, runs in windows_by_instrument(keys, universe).items():
        windows = [w for a, b in runs for w in split_windows(a, b, grain) if w[0] < now]
        total += len(windows)
        if not windows:
            continue
        plans.append(
            stale_windows(
                key,
                windows,
                fingerprints=_fingerprints(universe, warehouse, market_data, key, windows, now),
                states=warehouse.partition_states(key),
                rules=rules_key(
                    universe.validation_config(key),
                    universe.derived_intervals(key),
                    universe.bar_interval,
                ),
                now=now,
                materialized=frozenset(
                    a for a, _ in windows if partition_key_of(a.date(), key, grain) in materialized
                ),
            )
        )
    starts = [s for p in plans for s in p.stale]
    return IngestPlan(
        tuple(plans),
        window_start(min(starts).date(), grain).isoformat() if starts else None,
        window_start(max(starts).date(), grain).isoformat() if starts else None,
        total,
    )


def _fingerprints(
    universe: Universe,
    warehouse: WarehouseResource,
    market_data: MarketDataResource,
    key: str,
    windows: list[tuple[datetime, datetime]],
    now: datetime,
) -> dict[datetime, str]:
    """Per closed window, the fingerprint of the bars the source holds now. A file is read
    again (its author may have edited it); a remote venue's window counts only when every one
    of its days was fetched completely by that venue, and then its stored bars stand for it."""
    first, last = windows[0][0], windows[-1][1]
    if source_kind(universe.source_spec(key)) == "files":
        # A missing or unreadable file is not this planner's to report: the window is then
        # due, and raw_bars fails on it with the file's name and the reason.
        try:
            bars = deduplicate_bars(market_data.source().fetch(key, first, last))[0]
        except (OSError, ValueError):
            return {}
        complete = {a for a, _ in windows}
    else:
        bars = warehouse.read_bars("raw_bars", key, first, last)
        progress = warehouse.fetch_progress(key, first, last)
        complete = {
            a
            for a, b in windows
            if b <= now
            and all(
                progress.get((a + i * _DAY).date(), a) >= min(a + (i + 1) * _DAY, b)
                for i in range((b - a) // _DAY)
            )
        }
    return {
        a: bars_fingerprint(bars.filter((pl.col("ts") >= a) & (pl.col("ts") < b)))
        for a, b in windows
        if a in complete and b <= now
    }
