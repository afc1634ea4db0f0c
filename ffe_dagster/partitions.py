"""Partitions: bars are partitioned by time window x instrument; regimes by instrument.

The time grain is the universe's ``partition_grain`` (default ``month``). Dagster records a
few events per partition and asset, so the grain sets how much of a backfill is bookkeeping:
the bundled history as 4,929 day x instrument partitions took 247 s to ingest, nearly all of
it Dagster's; as months it is 162 partitions (``benchmarks/bench_grain.py`` measures day,
week and month on the same bars; README "Partitions"). The newest window stays
open and is refreshed by every cycle; fetching inside a window is still day by day, with a
progress record per completed UTC day (``ingest_progress``), so a backfill resumes at the first
incomplete day whatever the grain.
"""

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

from dagster import (
    DailyPartitionsDefinition,
    MonthlyPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
    TimeWindowPartitionsDefinition,
    WeeklyPartitionsDefinition,
)

from ffe_dagster.config import Universe
from ffe_dagster.config.universe import PARTITION_GRAINS

DATE_DIM = "date"  # the time dimension; its keys are the windows' first days (ISO dates)
INSTRUMENT_DIM = "instrument"


def window_start(day: date, grain: str) -> date:
    """The first day of the ``grain`` window holding ``day``."""
    if grain == "day":
        return day
    if grain == "week":
        return day - timedelta(days=day.weekday())
    if grain == "month":
        return day.replace(day=1)
    raise ValueError(f"unknown partition grain {grain!r}; use one of {PARTITION_GRAINS}")


def next_window(start: date, grain: str) -> date:
    """The first day of the ``grain`` window after the one starting on ``start``."""
    if grain == "day":
        return start + timedelta(days=1)
    if grain == "week":
        return start + timedelta(days=7)
    return (start.replace(day=28) + timedelta(days=4)).replace(day=1)


def bar_partitions(universe: Universe) -> MultiPartitionsDefinition:
    """Time window x instrument partitions over the configured history.

    The windows are aligned to the grain (a history starting mid-month has its first partition
    start on the 1st; ``windows_by_instrument`` clips it). With an open-ended history
    (``history_end: null``) the current window exists too (``end_offset=1``): it is the open
    partition every cycle refreshes with the newest bars.
    """
    grain = universe.partition_grain
    first = window_start(universe.history_start, grain).isoformat()
    end = (
        next_window(window_start(universe.history_end, grain), grain).isoformat()
        if universe.history_end
        else None
    )
    offset = 0 if end else 1
    time_def: TimeWindowPartitionsDefinition
    if grain == "day":
        time_def = DailyPartitionsDefinition(start_date=first, end_date=end, end_offset=offset)
    elif grain == "week":
        time_def = WeeklyPartitionsDefinition(
            start_date=first, end_date=end, end_offset=offset, day_offset=1
        )
    else:
        time_def = MonthlyPartitionsDefinition(start_date=first, end_date=end, end_offset=offset)
    return MultiPartitionsDefinition(
        {DATE_DIM: time_def, INSTRUMENT_DIM: instrument_partitions(universe)}
    )


def instrument_partitions(universe: Universe) -> StaticPartitionsDefinition:
    """One partition per instrument of the universe."""
    return StaticPartitionsDefinition([i.key for i in universe.instruments])


def partition_key_of(day: date, instrument: str, grain: str) -> str:
    """The bar partition key (``2024-03-01|BTC_USDT``) that holds ``day`` of ``instrument``."""
    return f"{window_start(day, grain).isoformat()}|{instrument}"


def windows_by_instrument(
    keys: Sequence[str], universe: Universe
) -> dict[str, list[tuple[datetime, datetime]]]:
    """Group time x instrument partition keys into contiguous [start, end) windows per
    instrument, clipped to the universe's history.

    A single-run backfill hands an asset many keys; writing one window per contiguous run of
    partitions keeps the warehouse writes few and still exactly partition-shaped.
    """
    grain = universe.partition_grain
    starts: dict[str, list[date]] = defaultdict(list)
    for key in keys:
        dims = key.keys_by_dimension if isinstance(key, MultiPartitionKey) else None
        if dims is None:
            day, instrument = key.split("|")
        else:
            day, instrument = dims[DATE_DIM], dims[INSTRUMENT_DIM]
        starts[instrument].append(date.fromisoformat(day))
    lower = universe.history_start
    upper = universe.history_end + timedelta(days=1) if universe.history_end else None
    windows: dict[str, list[tuple[datetime, datetime]]] = {}
    for instrument, values in starts.items():
        runs: list[tuple[date, date]] = []  # [first day, day after the last)
        for d in sorted(set(values)):
            end = next_window(d, grain)
            if runs and d == runs[-1][1]:
                runs[-1] = (runs[-1][0], end)
            else:
                runs.append((d, end))
        windows[instrument] = [
            (_midnight(max(a, lower)), _midnight(min(b, upper) if upper else b))
            for a, b in runs
            if (upper is None or a < upper) and b > lower
        ]
    return windows


def split_windows(start: datetime, end: datetime, grain: str) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` cut at the ``grain`` windows' boundaries: one piece per partition
    (the first and last clipped to ``start`` and ``end``)."""
    pieces: list[tuple[datetime, datetime]] = []
    a = start
    while a < end:
        b = min(_midnight(next_window(window_start(a.date(), grain), grain)), end)
        pieces.append((a, b))
        a = b
    return pieces


def _midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)
