"""Raw and validated bars, partitioned by day x instrument, backfilled in single runs."""

from collections.abc import Iterator
from datetime import UTC, datetime

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    MultiPartitionsDefinition,
    asset,
)

from ffe_dagster.config import Universe
from ffe_dagster.core.validation import ValidationConfig, validate_bars
from ffe_dagster.partitions import windows_by_instrument
from ffe_dagster.resources.market_data import MarketDataResource
from ffe_dagster.resources.warehouse import WarehouseResource

GX_CHECK = "gx_suite_passes"
QUARANTINE_CHECK = "quarantine_rate_within_limit"


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
        warehouse: WarehouseResource,
        market_data: MarketDataResource,
    ) -> MaterializeResult:
        """OHLCV bars as delivered by the market-data source, one partition per UTC day and
        instrument. Re-materializing a partition replaces exactly its rows (never duplicates)."""
        source = market_data.source()
        summary: dict[str, dict[str, object]] = {}
        for instrument, spans in windows_by_instrument(context.partition_keys).items():
            stored = 0
            first: datetime | None = None
            last: datetime | None = None
            for start, end in spans:
                bars = source.fetch(instrument, start, end)
                stored += warehouse.replace_window("raw_bars", instrument, start, end, bars)
                if bars.height:
                    first = first or bars["ts"].min()  # type: ignore[assignment]
                    last = bars["ts"].max()  # type: ignore[assignment]
            context.log.info(f"raw_bars {instrument}: {stored} bars stored ({first} .. {last})")
            summary[instrument] = {"bars": stored, "first": str(first), "last": str(last)}
        return MaterializeResult(
            metadata={
                "bars_stored": sum(int(str(s["bars"])) for s in summary.values()),
                "by_instrument": MetadataValue.json(summary),
            }
        )

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
                description="The Great Expectations suite passes on every validated row.",
            ),
            AssetCheckSpec(
                QUARANTINE_CHECK,
                asset="validated_bars",
                blocking=True,
                description="No more than the allowed share of rows went to quarantine.",
            ),
        ],
    )
    def validated_bars(
        context: AssetExecutionContext, warehouse: WarehouseResource
    ) -> Iterator[MaterializeResult | AssetCheckResult]:
        """Bars that passed the Great Expectations suite (schema, nulls, unique increasing UTC
        timestamps, positive prices, high/low bounds, volume, return outliers). Rows breaking a
        rule go to the ``bars_quarantine`` table with the rule and the reason; raw bars stay."""
        by_rule: dict[str, int] = {}
        suite_ok = True
        worst_fraction = 0.0
        checked = quarantined = 0
        limit = ValidationConfig().max_quarantine_fraction
        for instrument, spans in windows_by_instrument(context.partition_keys).items():
            config = ValidationConfig(require_volume=universe.instrument(instrument).has_volume)
            checked_before, quarantined_before = checked, quarantined
            for start, end in spans:
                raw = warehouse.read_bars("raw_bars", instrument, start, end)
                result = validate_bars(raw, config)
                warehouse.replace_window("validated_bars", instrument, start, end, result.valid)
                warehouse.replace_window(
                    "bars_quarantine",
                    instrument,
                    start,
                    end,
                    result.quarantine.with_columns(
                        run_id=pl.lit(context.run.run_id),
                        quarantined_at=pl.lit(datetime.now(UTC)),
                    ),
                )
                checked += result.rows_checked
                quarantined += result.quarantined_rows
                suite_ok &= result.suite_success_on_valid
                worst_fraction = max(worst_fraction, result.quarantine_fraction)
                for rule in result.rules:
                    by_rule[rule.rule] = by_rule.get(rule.rule, 0) + rule.unexpected_count
            context.log.info(
                f"validated_bars {instrument}: {checked - checked_before} rows checked, "
                f"{quarantined - quarantined_before} quarantined"
            )
        failures = {k: v for k, v in by_rule.items() if v}
        yield MaterializeResult(
            metadata={
                "rows_checked": checked,
                "rows_quarantined": quarantined,
                "failures_by_rule": MetadataValue.json(failures),
            }
        )
        yield AssetCheckResult(
            check_name=GX_CHECK,
            passed=suite_ok,
            severity=AssetCheckSeverity.ERROR,
            metadata={"rows_checked": checked, "rules": MetadataValue.json(by_rule)},
        )
        yield AssetCheckResult(
            check_name=QUARANTINE_CHECK,
            passed=worst_fraction <= limit,
            severity=AssetCheckSeverity.ERROR,
            metadata={"worst_quarantine_fraction": worst_fraction, "limit": limit},
        )

    return [raw_bars, validated_bars]
