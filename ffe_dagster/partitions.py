"""Partitions: bars are partitioned by day x instrument; regimes by instrument."""

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

from dagster import (
    DailyPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
)

from ffe_dagster.config import Universe

DATE_DIM = "date"
INSTRUMENT_DIM = "instrument"


def bar_partitions(universe: Universe) -> MultiPartitionsDefinition:
    """Day x instrument partitions over the configured history.

    With an open-ended history (``history_end: null``) today's partition exists too
    (``end_offset=1``): it is the open partition every cycle refreshes with the newest bars.
    """
    end = universe.history_end + timedelta(days=1) if universe.history_end else None
    return MultiPartitionsDefinition(
        {
            DATE_DIM: DailyPartitionsDefinition(
                start_date=universe.history_start.isoformat(),
                end_date=end.isoformat() if end else None,
                end_offset=0 if end else 1,
            ),
            INSTRUMENT_DIM: instrument_partitions(universe),
        }
    )


def instrument_partitions(universe: Universe) -> StaticPartitionsDefinition:
    """One partition per instrument of the universe."""
    return StaticPartitionsDefinition([i.key for i in universe.instruments])


def windows_by_instrument(keys: Sequence[str]) -> dict[str, list[tuple[datetime, datetime]]]:
    """Group day x instrument partition keys into contiguous [start, end) windows per instrument.

    A single-run backfill hands an asset thousands of keys; writing one window per contiguous run
    of days keeps the warehouse writes few and still exactly partition-shaped.
    """
    days: dict[str, list[date]] = defaultdict(list)
    for key in keys:
        dims = key.keys_by_dimension if isinstance(key, MultiPartitionKey) else None
        if dims is None:
            day, instrument = key.split("|")
        else:
            day, instrument = dims[DATE_DIM], dims[INSTRUMENT_DIM]
        days[instrument].append(date.fromisoformat(day))
    windows: dict[str, list[tuple[datetime, datetime]]] = {}
    for instrument, values in days.items():
        runs: list[tuple[date, date]] = []
        for d in sorted(set(values)):
            if runs and d == runs[-1][1] + timedelta(days=1):
                runs[-1] = (runs[-1][0], d)
            else:
                runs.append((d, d))
        windows[instrument] = [
            (
                datetime(a.year, a.month, a.day, tzinfo=UTC),
                datetime(b.year, b.month, b.day, tzinfo=UTC) + timedelta(days=1),
            )
            for a, b in runs
        ]
    return windows
