"""Fetching one instrument's bars from its source into ``raw_bars``, day by day, resumably.

``plan_fetch`` finds the spans of a window still to fetch (days complete in ``ingest_progress``
are skipped, a day fetched part way resumes after its newest bar); ``ingest_instrument`` pages
through them and stores every completed UTC day, with its progress record, in one transaction;
``Acquisition`` is the per-instrument summary the ``raw_bars`` asset reports.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import polars as pl
from dagster import MetadataValue

from ffe_dagster.config import CcxtSourceSpec, OandaSourceSpec, SourceSpec
from ffe_dagster.core.data.bars import (
    Instrument,
    MarketSchedule,
    deduplicate_bars,
    empty_bars,
    find_gaps,
    floor_time,
    interval_to_timedelta,
)
from ffe_dagster.resources.warehouse import WarehouseResource
from ffe_dagster.sources.base import BarSource, FetchStats

_DAY = timedelta(days=1)


def source_kind(spec: SourceSpec) -> str:
    """The resource's name for the source behind ``spec``: files, ccxt or oanda."""
    if isinstance(spec, CcxtSourceSpec):
        return "ccxt"
    if isinstance(spec, OandaSourceSpec):
        return "oanda"
    return "files"


@dataclass(slots=True)
class Acquisition:
    """What one run fetched for one instrument (the acquisition summary of docs/spec.md §1)."""

    instrument: str
    source: str
    interval: str
    stats: FetchStats = field(default_factory=FetchStats)
    bars_fetched: int = 0
    days_fetched: int = 0
    days_skipped: int = 0
    first_bar: datetime | None = None
    last_bar: datetime | None = None
    gaps: int = 0
    open_missing_bars: int = 0
    largest_gap: str | None = None
    error: str | None = None
    wall_s: float = 0.0  # time spent fetching and storing, rate-limit waits included
    listener: Callable[["Acquisition"], None] | None = None  # told after every store (progress)

    def notify(self) -> None:
        """Tell the listener (a terminal progress bar) how far this instrument got."""
        if self.listener is not None:
            self.listener(self)

    def note_bars(self, bars: pl.DataFrame) -> None:
        """Count a stored chunk of bars."""
        if not bars.height:
            return
        self.bars_fetched += bars.height
        first, last = bars["ts"].min(), bars["ts"].max()
        assert isinstance(first, datetime) and isinstance(last, datetime)
        self.first_bar = min(self.first_bar or first, first)
        self.last_bar = max(self.last_bar or last, last)

    def note_gaps(self, gaps: pl.DataFrame) -> None:
        """Count the runs of bars missing while the market was open."""
        open_gaps = gaps.filter(pl.col("open_missing_bars") > 0)
        self.gaps += open_gaps.height
        self.open_missing_bars += int(open_gaps["open_missing_bars"].sum())
        if open_gaps.height:
            worst = open_gaps.sort("open_missing_bars").row(-1, named=True)
            self.largest_gap = (
                f"{worst['gap_start']:%F %H:%M} .. {worst['gap_end']:%F %H:%M} UTC "
                f"({worst['open_missing_bars']} bars)"
            )

    def as_dict(self) -> dict[str, Any]:
        """Plain values for Dagster metadata."""
        return {
            "source": self.source,
            "interval": self.interval,
            "bars_fetched": self.bars_fetched,
            "days_fetched": self.days_fetched,
            "days_skipped_complete": self.days_skipped,
            "first_bar": self.first_bar.isoformat() if self.first_bar else None,
            "last_bar": self.last_bar.isoformat() if self.last_bar else None,
            "gaps": self.gaps,
            "open_missing_bars": self.open_missing_bars,
            "largest_gap": self.largest_gap,
            "wall_s": round(self.wall_s, 3),
            **self.stats.as_dict(),
            **({"error": self.error} if self.error else {}),
        }


def plan_fetch(
    warehouse: WarehouseResource,
    instrument: str,
    start: datetime,
    stop: datetime,
    *,
    interval: timedelta,
    resume: bool,
    source: str | None = None,
) -> tuple[list[tuple[datetime, datetime]], int]:
    """The spans of ``[start, stop)`` that still need fetching, and the days skipped.

    With ``resume``, a day whose progress record reaches its end (or ``stop``) is complete and
    skipped; a day fetched part way (the open day of an earlier cycle) is fetched from its
    newest stored bar on, so a cycle asks only for bars newer than the last one stored. Only
    progress recorded by ``source`` counts (a universe moved from files to a venue refetches).
    """
    if not resume:
        return ([(start, stop)] if start < stop else []), 0
    progress = warehouse.fetch_progress(instrument, start, stop, source=source)
    spans: list[tuple[datetime, datetime]] = []
    skipped = 0
    day = start
    while day < stop:
        day_end = min(day + _DAY, stop)
        done = progress.get(day.date())
        if done is not None and done >= day_end:
            skipped += 1
        else:
            begin = day
            if done is not None:
                newest = warehouse.last_bar("raw_bars", instrument, before=day_end, at_or_after=day)
                begin = newest[0] + interval if newest else day
            if spans and spans[-1][1] == begin:
                spans[-1] = (spans[-1][0], day_end)
            elif begin < day_end:
                spans.append((begin, day_end))
        day = day_end
    return spans, skipped


def ingest_instrument(
    warehouse: WarehouseResource,
    source: BarSource,
    instrument: Instrument,
    windows: Sequence[tuple[datetime, datetime]],
    acquisition: Acquisition,
    *,
    now: datetime,
    refetch: bool = False,
    run_id: str | None = None,
) -> None:
    """Fetch ``windows`` of ``instrument`` from ``source`` into ``raw_bars``.

    Every completed UTC day is stored (with its progress record) as soon as its last page is
    in, so a failure keeps everything before it; ``acquisition`` is updated as the run goes and
    stays meaningful when this raises ``SourceError``.
    """
    started = time.monotonic()
    try:
        _ingest_windows(warehouse, source, instrument, windows, acquisition, now, refetch, run_id)
    finally:
        acquisition.wall_s += time.monotonic() - started


def _ingest_windows(
    warehouse: WarehouseResource,
    source: BarSource,
    instrument: Instrument,
    windows: Sequence[tuple[datetime, datetime]],
    acquisition: Acquisition,
    now: datetime,
    refetch: bool,
    run_id: str | None,
) -> None:
    interval = interval_to_timedelta(source.interval)
    schedule = MarketSchedule.for_market(instrument.market)
    for window_start, window_end in windows:
        stop = min(window_end, now)
        spans, skipped = plan_fetch(
            warehouse,
            instrument.key,
            window_start,
            stop,
            interval=interval,
            resume=source.resumable and not refetch,
            source=source.name,
        )
        acquisition.days_skipped += skipped
        acquisition.notify()
        for span_start, span_end in spans:
            previous = warehouse.last_bar("raw_bars", instrument.key, before=span_start)
            writer = _DayWriter(
                warehouse, instrument.key, source.name, run_id, acquisition, span_start, span_start
            )
            for page in source.fetch_pages(
                instrument, span_start, span_end, now=now, stats=acquisition.stats
            ):
                writer.pending.append(page.bars)
                writer.store(floor_time(page.end, _DAY))  # every day completed by this page
                writer.covered = page.end
            writer.store(writer.covered)  # the rest of the span (an open day ends at ``now``)
            acquisition.note_gaps(
                find_gaps(
                    writer.stored_ts(),
                    interval,
                    schedule,
                    window=(span_start, writer.stored_until),
                    previous_ts=previous[0] if previous else None,
                )
            )


@dataclass(slots=True)
class _DayWriter:
    """Collects pages and stores them up to a day boundary, each store one transaction."""

    warehouse: WarehouseResource
    instrument: str
    source: str
    run_id: str | None
    acquisition: Acquisition
    stored_until: datetime
    covered: datetime
    pending: list[pl.DataFrame] = field(default_factory=list)
    stamps: list[pl.Series] = field(default_factory=list)

    def store(self, until: datetime) -> None:
        if until <= self.stored_until:
            return
        frame = deduplicate_bars(pl.concat(self.pending))[0] if self.pending else empty_bars()
        keep = frame.filter(pl.col("ts") < until)
        rest = frame.filter(pl.col("ts") >= until)
        self.warehouse.store_fetched(
            self.instrument, self.stored_until, until, keep, source=self.source, run_id=self.run_id
        )
        self.acquisition.note_bars(keep)
        self.acquisition.days_fetched += len(utc_days(self.stored_until, until))
        self.acquisition.notify()
        self.stamps.append(keep["ts"])
        self.pending = [rest] if rest.height else []
        self.stored_until = until

    def stored_ts(self) -> pl.Series:
        return pl.concat(self.stamps) if self.stamps else empty_bars()["ts"]


def utc_days(start: datetime, end: datetime) -> list[datetime]:
    """The UTC days (their midnights) that ``[start, end)`` touches."""
    days: list[datetime] = []
    day = floor_time(start, _DAY)
    while day < end:
        days.append(day)
        day += _DAY
    return days


def acquisition_metadata(acquisitions: dict[str, Acquisition], now: datetime) -> dict[str, Any]:
    rows = {k: a.as_dict() for k, a in acquisitions.items()}
    firsts = [a.first_bar for a in acquisitions.values() if a.first_bar]
    lasts = [a.last_bar for a in acquisitions.values() if a.last_bar]
    table = "\n".join(
        [
            "| instrument | source | bars | requests | retries | first bar | last bar | gaps |",
            "|---|---|---|---|---|---|---|---|",
            *(
                f"| {k} | {r['source']} | {r['bars_fetched']} | {r['requests']} | "
                f"{r['retries']} | {r['first_bar']} | {r['last_bar']} | {r['gaps']} |"
                for k, r in rows.items()
            ),
        ]
    )
    return {
        "bars_fetched": sum(a.bars_fetched for a in acquisitions.values()),
        # Kept under its earlier name: the bars written to raw_bars by this run.
        "bars_stored": sum(a.bars_fetched for a in acquisitions.values()),
        "requests": sum(a.stats.requests for a in acquisitions.values()),
        "rate_wait_s": round(sum(a.stats.rate_wait_s for a in acquisitions.values()), 3),
        "fetch_wall_s": round(sum(a.wall_s for a in acquisitions.values()), 3),
        "retries": sum(a.stats.retries for a in acquisitions.values()),
        "gaps": sum(a.gaps for a in acquisitions.values()),
        "first_bar": min(firsts).isoformat() if firsts else "none",
        "last_bar": max(lasts).isoformat() if lasts else "none",
        "as_of": now.isoformat(),
        "acquisition_summary": MetadataValue.md(table),
        "by_instrument": MetadataValue.json(rows),
    }
