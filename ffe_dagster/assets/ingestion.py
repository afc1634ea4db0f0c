"""Raw and validated bars, partitioned by day x instrument, backfilled in single runs.

``raw_bars`` fetches each instrument's finest interval from its source (files, a ccxt exchange,
OANDA) and stores every completed UTC day as soon as it is in, together with a progress record,
in one transaction: a backfill killed at any point and run again resumes at the first day that
was not complete, and ends with exactly the bars it should have. ``validated_bars`` runs the
Great Expectations suite on those bars, quarantines the rows that break a rule, and derives the
coarser intervals by resampling the valid bars.
"""

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    MultiPartitionsDefinition,
    asset,
)

from ffe_dagster.config import CcxtSourceSpec, OandaSourceSpec, SourceSpec, Universe
from ffe_dagster.core.bars import (
    Instrument,
    MarketSchedule,
    deduplicate_bars,
    empty_bars,
    find_gaps,
    floor_time,
    interval_to_timedelta,
)
from ffe_dagster.core.resample import resample_bars
from ffe_dagster.core.validation import ValidationResult, validate_bars
from ffe_dagster.partitions import windows_by_instrument
from ffe_dagster.resources.market_data import MarketDataResource
from ffe_dagster.resources.warehouse import WarehouseResource
from ffe_dagster.sources.base import BarSource, FetchStats, SourceError

GX_CHECK = "gx_suite_passes"
QUARANTINE_CHECK = "quarantine_rate_within_limit"
SPACING_CHECK = "bar_spacing_regular"
FRESHNESS_CHECK = "bars_fresh"
_DAY = timedelta(days=1)
_LISTED = 20  # how many offending items a check's metadata lists


class RawBarsConfig(Config):
    """Run configuration of ``raw_bars``."""

    refetch: bool = False
    """Fetch days again even when an earlier run fetched them completely."""


def source_kind(spec: SourceSpec) -> str:
    """The resource's name for the source behind ``spec``: files, ccxt or oanda."""
    if isinstance(spec, CcxtSourceSpec):
        return "ccxt"
    if isinstance(spec, OandaSourceSpec):
        return "oanda"
    return "files"


@dataclass(slots=True)
class Acquisition:
    """What one run fetched for one instrument (the acquisition summary of SPEC section 1)."""

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
        self.acquisition.days_fetched += len(_days(self.stored_until, until))
        self.stamps.append(keep["ts"])
        self.pending = [rest] if rest.height else []
        self.stored_until = until

    def stored_ts(self) -> pl.Series:
        return pl.concat(self.stamps) if self.stamps else empty_bars()["ts"]


def _days(start: datetime, end: datetime) -> list[datetime]:
    days: list[datetime] = []
    day = floor_time(start, _DAY)
    while day < end:
        days.append(day)
        day += _DAY
    return days


@dataclass(slots=True)
class _ValidationTally:
    """What ``validated_bars`` found over every window of a run."""

    rows_checked: int = 0
    rows_quarantined: int = 0
    suite_ok: bool = True
    worst_fraction: float = 0.0
    by_rule: dict[str, int] = field(default_factory=dict)
    rules_run: set[str] = field(default_factory=set)
    findings: dict[str, list[str]] = field(default_factory=dict)
    failing_partitions: dict[str, set[str]] = field(default_factory=dict)
    staleness: dict[str, dict[str, Any]] = field(default_factory=dict)
    gaps: int = 0
    by_instrument: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, instrument: str, result: ValidationResult) -> None:
        self.rows_checked += result.rows_checked
        self.rows_quarantined += result.quarantined_rows
        self.suite_ok &= result.suite_success_on_valid
        self.worst_fraction = max(self.worst_fraction, result.quarantine_fraction)
        for rule in result.rules:
            self.rules_run.add(rule.rule)
            self.by_rule[rule.rule] = self.by_rule.get(rule.rule, 0) + rule.unexpected_count
        for rule, reason in result.findings:
            self.findings.setdefault(rule, []).append(f"{instrument}: {reason}")
        open_gaps = result.gaps.filter(pl.col("open_missing_bars") > 0)
        self.gaps += open_gaps.height
        mine = self.by_instrument.setdefault(
            instrument, {"rows_checked": 0, "rows_quarantined": 0, "gaps": 0}
        )
        mine["rows_checked"] += result.rows_checked
        mine["rows_quarantined"] += result.quarantined_rows
        mine["gaps"] += open_gaps.height
        for day in result.quarantine["ts"].dt.date().unique().sort().to_list():
            self.fail(QUARANTINE_CHECK, f"{day}|{instrument}")
        if result.staleness is not None:
            s = result.staleness
            self.staleness[instrument] = {
                "newest_bar": s.newest_bar.isoformat() if s.newest_bar else None,
                "age_minutes": round(s.age / timedelta(minutes=1), 1)
                if s.age != timedelta.max
                else None,
                "limit_minutes": round(s.limit / timedelta(minutes=1), 1),
                "measure": s.measure,
                "fresh": s.fresh,
            }
            if not s.fresh:
                self.fail(FRESHNESS_CHECK, f"{s.now.date()}|{instrument}")

    def fail(self, check: str, partition: str) -> None:
        self.failing_partitions.setdefault(check, set()).add(partition)

    def partitions(self, check: str) -> list[str]:
        return sorted(self.failing_partitions.get(check, set()))[:_LISTED]


def _failing_gap_partitions(
    result: ValidationResult, instrument: str, interval: timedelta, limit: timedelta
) -> list[str]:
    over = result.gaps.filter(pl.col("open_missing_bars") * interval > limit)
    days: set[str] = set()
    for gap in over.iter_rows(named=True):
        days.update(f"{d.date()}|{instrument}" for d in _days(gap["gap_start"], gap["gap_end"]))
    return sorted(days)


def build_ingestion_assets(
    universe: Universe, partitions_def: MultiPartitionsDefinition
) -> list[AssetsDefinition]:
    """The ``raw_bars`` and ``validated_bars`` assets for this universe."""

    @asset(
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        group_name="ingestion",
        kinds={"duckdb", "polars"},
        pool="warehouse",
    )
    def raw_bars(
        context: AssetExecutionContext,
        config: RawBarsConfig,
        warehouse: WarehouseResource,
        market_data: MarketDataResource,
    ) -> MaterializeResult:
        """OHLCV bars as delivered by each instrument's source (files, a ccxt exchange or
        OANDA), at its finest interval, one partition per UTC day and instrument. Each completed
        day is stored as soon as it is in, so a backfill that dies resumes where it stopped;
        re-materializing replaces exactly a partition's rows (never duplicates). Remote days
        fetched completely before are skipped unless ``refetch`` is set. The metadata is the
        acquisition summary: bars fetched, requests, retries, first and last bar, gaps."""
        now = market_data.now()
        sources = market_data.sources()
        acquisitions: dict[str, Acquisition] = {}
        for key, windows in windows_by_instrument(context.partition_keys).items():
            instrument = universe.instrument(key)
            source = sources[source_kind(universe.source_spec(key))]
            acquisition = acquisitions[key] = Acquisition(key, source.name, source.interval)
            try:
                ingest_instrument(
                    warehouse,
                    source,
                    instrument,
                    windows,
                    acquisition,
                    now=now,
                    refetch=config.refetch,
                    run_id=context.run.run_id,
                )
            except SourceError as exc:
                acquisition.error = str(exc)
                context.log.error(f"raw_bars {key}: {exc}")
                continue
            summary = acquisition.as_dict()
            context.log.info(
                f"raw_bars {key}: {summary['bars_fetched']} bars from {source.name} "
                f"({summary['first_bar']} .. {summary['last_bar']}), "
                f"{summary['requests']} requests, {summary['retries']} retries, "
                f"{summary['days_skipped_complete']} complete days skipped, "
                f"{summary['gaps']} gaps"
            )
        metadata = _acquisition_metadata(acquisitions, now)
        failed = {k: a.error for k, a in acquisitions.items() if a.error}
        if failed:
            raise Failure(
                description="raw_bars could not fetch "
                + "; ".join(f"{k}: {e}" for k, e in failed.items())
                + ". Bars of every completed day stay stored; run again to resume.",
                metadata=metadata,
            )
        return MaterializeResult(metadata=metadata)

    @asset(
        deps=[raw_bars],
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        group_name="ingestion",
        kinds={"duckdb", "great_expectations"},
        pool="warehouse",
        check_specs=[
            AssetCheckSpec(
                GX_CHECK,
                asset="validated_bars",
                blocking=True,
                description="The Great Expectations suite (column types, no nulls, unique and "
                "strictly increasing UTC timestamps, prices > 0, high/low bounds, volume >= 0, "
                "return outliers) passes on every validated row of every partition.",
            ),
            AssetCheckSpec(
                QUARANTINE_CHECK,
                asset="validated_bars",
                blocking=True,
                description="No more than the allowed share of rows went to quarantine.",
            ),
            AssetCheckSpec(
                SPACING_CHECK,
                asset="validated_bars",
                blocking=True,
                description="Bars are regularly spaced except where the market is closed: no "
                "run of missing bars longer than the allowed open-market gap.",
            ),
            AssetCheckSpec(
                FRESHNESS_CHECK,
                asset="validated_bars",
                blocking=True,
                description="The open partition's newest bar is recent, by the market's "
                "schedule (crypto: 2 intervals + grace; forex: 2 h open, 72 h over a weekend).",
            ),
        ],
    )
    def validated_bars(
        context: AssetExecutionContext,
        warehouse: WarehouseResource,
        market_data: MarketDataResource,
    ) -> Iterator[MaterializeResult | AssetCheckResult]:
        """Bars that passed the Great Expectations suite of SPEC section 2 (column types, no
        nulls, unique increasing UTC timestamps, positive prices, high/low bounds, volume,
        return outliers, bar spacing and staleness by the market's schedule), at the universe's
        ``bar_interval``; every configured interval (fetched and resampled) is also written to
        ``validated_bars_by_interval``. Rows breaking a rule go to ``bars_quarantine`` with the
        rule and the reason; raw bars are never deleted."""
        now = market_data.now()
        tally = _ValidationTally()
        for key, windows in windows_by_instrument(context.partition_keys).items():
            config = universe.validation_config(key)
            fine = universe.fetch_interval(key)
            step = interval_to_timedelta(fine)
            for start, end in windows:
                if start >= now:
                    continue  # a partition in the future has no bars yet
                is_open = end > now
                cutoff = min(end, floor_time(now, step)) if is_open else end
                raw = warehouse.read_bars("raw_bars", key, start, end)
                previous = warehouse.last_bar(
                    "validated_bars_by_interval", key, before=start, interval=fine
                )
                result = validate_bars(
                    raw,
                    config,
                    previous_bar=previous,
                    window=(start, cutoff),
                    now=now if is_open else None,
                )
                _store_validated(
                    warehouse, universe, key, start, end, result, cutoff, context.run.run_id
                )
                tally.add(key, result)
                for partition in _failing_gap_partitions(result, key, step, config.max_open_gap):
                    tally.fail(SPACING_CHECK, partition)
            mine = tally.by_instrument.get(key, {})
            context.log.info(
                f"validated_bars {key}: {mine.get('rows_checked', 0)} rows checked, "
                f"{mine.get('rows_quarantined', 0)} quarantined, {mine.get('gaps', 0)} gaps"
            )
        yield from _validation_results(tally, universe.validation.max_quarantine_fraction)

    return [raw_bars, validated_bars]


def _store_validated(
    warehouse: WarehouseResource,
    universe: Universe,
    key: str,
    start: datetime,
    end: datetime,
    result: ValidationResult,
    cutoff: datetime,
    run_id: str,
) -> None:
    fine = universe.fetch_interval(key)
    for interval in universe.derived_intervals(key):
        bars = resample_bars(result.valid, interval, source_interval=fine, complete_before=cutoff)
        warehouse.replace_interval_window(key, interval, start, end, bars)
        if interval == universe.bar_interval:
            warehouse.replace_window("validated_bars", key, start, end, bars)
    warehouse.replace_window(
        "bars_quarantine",
        key,
        start,
        end,
        result.quarantine.with_columns(
            run_id=pl.lit(run_id), quarantined_at=pl.lit(datetime.now(UTC))
        ),
    )


def _acquisition_metadata(acquisitions: dict[str, Acquisition], now: datetime) -> dict[str, Any]:
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


def _validation_results(
    tally: _ValidationTally, max_fraction: float
) -> Iterator[MaterializeResult | AssetCheckResult]:
    failures = {k: v for k, v in tally.by_rule.items() if v}
    yield MaterializeResult(
        metadata={
            "checks": len(tally.rules_run),
            "rows_checked": tally.rows_checked,
            "rows_quarantined": tally.rows_quarantined,
            "failures_by_rule": MetadataValue.json(failures),
            "gaps": tally.gaps,
            "by_instrument": MetadataValue.json(tally.by_instrument),
        }
    )
    yield AssetCheckResult(
        check_name=GX_CHECK,
        passed=tally.suite_ok,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "rows_checked": tally.rows_checked,
            "rules": MetadataValue.json(tally.by_rule),
            "findings": MetadataValue.json(tally.findings.get("schema_types", [])[:_LISTED]),
        },
    )
    yield AssetCheckResult(
        check_name=QUARANTINE_CHECK,
        passed=tally.worst_fraction <= max_fraction,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "worst_quarantine_fraction": tally.worst_fraction,
            "limit": max_fraction,
            "rows_quarantined": tally.rows_quarantined,
            "partitions_with_quarantined_rows": MetadataValue.json(
                tally.partitions(QUARANTINE_CHECK)
            ),
        },
    )
    spacing = tally.findings.get("bar_spacing_regular", [])
    yield AssetCheckResult(
        check_name=SPACING_CHECK,
        passed=not spacing,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "gaps_found": tally.gaps,
            "gaps_over_limit": MetadataValue.json(spacing[:_LISTED]),
            "failing_partitions": MetadataValue.json(tally.partitions(SPACING_CHECK)),
        },
    )
    stale = tally.findings.get("bars_fresh", [])
    yield AssetCheckResult(
        check_name=FRESHNESS_CHECK,
        passed=not stale,
        severity=AssetCheckSeverity.ERROR,
        description=None
        if tally.staleness
        else "Not applicable: no partition of this run is open (the history has ended).",
        metadata={
            "staleness": MetadataValue.json(tally.staleness),
            "stale": MetadataValue.json(stale[:_LISTED]),
            "failing_partitions": MetadataValue.json(tally.partitions(FRESHNESS_CHECK)),
        },
    )
