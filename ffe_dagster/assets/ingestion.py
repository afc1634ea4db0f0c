"""Raw and validated bars, partitioned by time window x instrument, backfilled in single runs.

``raw_bars`` fetches each instrument's finest interval from its source (files, a ccxt exchange,
OANDA) and stores every completed UTC day as soon as it is in, together with a progress record,
in one transaction: a backfill killed at any point and run again resumes at the first day that
was not complete, and ends with exactly the bars it should have. ``validated_bars`` runs the
Great Expectations suite on those bars, quarantines the rows that break a rule, and derives the
coarser intervals by resampling the valid bars.
"""

import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    BetaWarning,
    Config,
    Failure,
    MaterializeResult,
    MultiPartitionsDefinition,
    asset,
)

from ffe_dagster.assets.acquisition import (
    Acquisition,
    acquisition_metadata,
    ingest_instrument,
    source_kind,
    utc_days,
)
from ffe_dagster.assets.ingestion_checks import (
    FRESHNESS_CHECK,
    GX_CHECK,
    QUARANTINE_CHECK,
    SPACING_CHECK,
    ValidationTally,
    failing_gap_partitions,
    validation_results,
)
from ffe_dagster.config import Universe
from ffe_dagster.core.data.bars import floor_time, interval_to_timedelta
from ffe_dagster.core.data.partition_state import PartitionState, bars_fingerprint, rules_key
from ffe_dagster.core.data.resample import resample_bars
from ffe_dagster.core.data.validation import ValidationResult, validate_bars
from ffe_dagster.partitions import split_windows, windows_by_instrument
from ffe_dagster.resources.market_data import MarketDataResource
from ffe_dagster.resources.warehouse import WarehouseResource
from ffe_dagster.sources.base import SourceError
from ffe_dagster.terminal import IngestProgress


class RawBarsConfig(Config):
    """Run configuration of ``raw_bars``."""

    refetch: bool = False
    """Fetch days again even when an earlier run fetched them completely."""


def build_ingestion_assets(
    universe: Universe, partitions_def: MultiPartitionsDefinition
) -> list[AssetsDefinition]:
    """The ``raw_bars`` and ``validated_bars`` assets for this universe."""
    with warnings.catch_warnings():
        # ``backfill_policy`` is beta in Dagster 1.13 with no stable alternative, and relied on:
        # a backfill is one run over many partitions (bookkeeping, not work, grows per run).
        warnings.simplefilter("ignore", BetaWarning)
        raw_bars_asset = asset(
            partitions_def=partitions_def,
            backfill_policy=BackfillPolicy.single_run(),
            group_name="ingestion",
            kinds={"duckdb", "polars"},
            pool="warehouse",
        )

    @raw_bars_asset
    def raw_bars(
        context: AssetExecutionContext,
        config: RawBarsConfig,
        warehouse: WarehouseResource,
        market_data: MarketDataResource,
    ) -> MaterializeResult:
        """OHLCV bars as delivered by each instrument's source (files, a ccxt exchange or
        OANDA), at its finest interval, one partition per time window (the universe's
        ``partition_grain``, default a month) and instrument. Each completed UTC day is stored
        as soon as it is in, so a backfill that dies resumes where it stopped;
        re-materializing replaces exactly a partition's rows (never duplicates). Remote days
        fetched completely before are skipped unless ``refetch`` is set. The metadata is the
        acquisition summary: bars fetched, requests, retries, first and last bar, gaps."""
        started = time.monotonic()
        now = market_data.now()
        sources = market_data.sources()
        acquisitions: dict[str, Acquisition] = {}
        by_instrument = windows_by_instrument(context.partition_keys, universe)
        progress = IngestProgress(
            sum(len(utc_days(a, min(b, now))) for ws in by_instrument.values() for a, b in ws)
        )
        for key, windows in by_instrument.items():
            instrument = universe.instrument(key)
            source = sources[source_kind(universe.source_spec(key))]
            acquisition = acquisitions[key] = Acquisition(
                key,
                source.name,
                source.interval,
                listener=lambda a: progress.report(
                    a.instrument, a.days_fetched + a.days_skipped, a.bars_fetched
                ),
            )
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
        progress.close()
        metadata = acquisition_metadata(acquisitions, now)
        # Time in this body; the rest of a run's wall is Dagster's own work (make bench-cycle).
        metadata["compute_s"] = round(time.monotonic() - started, 3)
        failed = {k: a.error for k, a in acquisitions.items() if a.error}
        if failed:
            raise Failure(
                description="raw_bars could not fetch "
                + "; ".join(f"{k}: {e}" for k, e in failed.items())
                + ". Bars of every completed day stay stored; run again to resume.",
                metadata=metadata,
            )
        return MaterializeResult(metadata=metadata)

    with warnings.catch_warnings():
        # ``backfill_policy`` is beta (see raw_bars).
        warnings.simplefilter("ignore", BetaWarning)
        validated_bars_asset = asset(
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

    @validated_bars_asset
    def validated_bars(
        context: AssetExecutionContext,
        warehouse: WarehouseResource,
        market_data: MarketDataResource,
    ) -> Iterator[MaterializeResult | AssetCheckResult]:
        """Bars that passed the Great Expectations suite of docs/spec.md §2 (column types, no
        nulls, unique increasing UTC timestamps, positive prices, high/low bounds, volume,
        return outliers, bar spacing and staleness by the market's schedule), at the universe's
        ``bar_interval``; every configured interval (fetched and resampled) is also written to
        ``validated_bars_by_interval``. Rows breaking a rule go to ``bars_quarantine`` with the
        rule and the reason; raw bars are never deleted."""
        started = time.monotonic()
        now = market_data.now()
        tally = ValidationTally(grain=universe.partition_grain)
        for key, windows in windows_by_instrument(context.partition_keys, universe).items():
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
                gap_failures = failing_gap_partitions(
                    result, key, step, config.max_open_gap, universe.partition_grain
                )
                for partition in gap_failures:
                    tally.fail(SPACING_CHECK, partition)
                passed = (
                    result.suite_success_on_valid
                    and result.quarantine_fraction <= universe.validation.max_quarantine_fraction
                    and not gap_failures
                    and (result.staleness is None or result.staleness.fresh)
                )
                warehouse.record_partition_states(
                    key,
                    start,
                    end,
                    _partition_states(universe, key, raw, start, end, now) if passed else [],
                    context.run.run_id,
                )
            mine = tally.by_instrument.get(key, {})
            context.log.info(
                f"validated_bars {key}: {mine.get('rows_checked', 0)} rows checked, "
                f"{mine.get('rows_quarantined', 0)} quarantined, {mine.get('gaps', 0)} gaps"
            )
        yield from validation_results(
            tally, universe.validation.max_quarantine_fraction, time.monotonic() - started
        )

    return [raw_bars, validated_bars]


def _partition_states(
    universe: Universe,
    key: str,
    raw: pl.DataFrame,
    start: datetime,
    end: datetime,
    now: datetime,
) -> list[PartitionState]:
    """What this validation saw, per closed partition of ``[start, end)`` (the window passed
    every check): the cycle planner (``ffe_dagster.ingest_plan``) skips these until they change.
    """
    rules = rules_key(
        universe.validation_config(key), universe.derived_intervals(key), universe.bar_interval
    )
    source = source_kind(universe.source_spec(key))
    states: list[PartitionState] = []
    for a, b in split_windows(start, end, universe.partition_grain):
        if b > now:
            continue  # the open partition is refreshed by every cycle anyway
        bars = raw.filter((pl.col("ts") >= a) & (pl.col("ts") < b))
        states.append(PartitionState(key, a, b, source, bars_fingerprint(bars), rules, bars.height))
    return states


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
