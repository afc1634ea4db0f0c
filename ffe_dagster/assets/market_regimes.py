"""Market regimes per instrument over the validated history."""

import warnings
from collections import Counter

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    BetaWarning,
    MaterializeResult,
    MetadataValue,
    MultiToSingleDimensionPartitionMapping,
    StaticPartitionsDefinition,
    asset,
)

from ffe_dagster.core.regimes.detection import RegimeConfig, confirmed_regime, detect_regimes
from ffe_dagster.partitions import INSTRUMENT_DIM
from ffe_dagster.resources.warehouse import WarehouseResource


def build_regime_asset(instruments: StaticPartitionsDefinition) -> AssetsDefinition:
    """The ``market_regimes`` asset, one partition per instrument."""
    with warnings.catch_warnings():
        # Both are beta in Dagster 1.13 with no stable alternative, and relied on: an
        # instrument's regimes read every time window of that instrument's validated bars
        # (MultiToSingleDimensionPartitionMapping), and a backfill of all instruments is one run.
        warnings.simplefilter("ignore", BetaWarning)
        regime_asset = asset(
            deps=[
                AssetDep(
                    "validated_bars",
                    partition_mapping=MultiToSingleDimensionPartitionMapping(
                        partition_dimension_name=INSTRUMENT_DIM
                    ),
                )
            ],
            partitions_def=instruments,
            backfill_policy=BackfillPolicy.single_run(),
            group_name="regimes",
            kinds={"duckdb", "polars"},
            pool="warehouse",
        )

    @regime_asset
    def market_regimes(
        context: AssetExecutionContext, warehouse: WarehouseResource
    ) -> MaterializeResult:
        """Per instrument and bar: BULL / BEAR / SIDEWAYS from 7-day momentum (+-1 %/day),
        20-day volatility level, trend efficiency, volume ratio and a 0-100 % confidence.
        Each bar carries the regime of the previous complete day (no look-ahead)."""
        config = RegimeConfig()
        summary: dict[str, dict[str, object]] = {}
        for instrument in context.partition_keys:
            bars = warehouse.read_bars("validated_bars", instrument)
            regimes = detect_regimes(bars, config)
            warehouse.replace_regimes(instrument, regimes)
            counts = Counter(regimes["regime"].to_list())
            latest = regimes.tail(1).to_dicts()[0] if regimes.height else {}
            confirmed = confirmed_regime(regimes, config)
            summary[instrument] = {
                "bars": regimes.height,
                "share_pct": {
                    k: round(100 * v / max(regimes.height, 1), 1) for k, v in counts.items()
                },
                "latest": latest.get("regime"),
                "latest_confidence_pct": latest.get("confidence_pct"),
                "confirmed": confirmed.value if confirmed else None,
            }
            context.log.info(f"market_regimes {instrument}: {summary[instrument]}")
        return MaterializeResult(metadata={"by_instrument": MetadataValue.json(summary)})

    return market_regimes
