"""Jobs of the cycle: ingest (partitioned bars), regimes, and the optimization chain."""

from dagster import AssetSelection, MultiPartitionsDefinition, define_asset_job
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)

INGEST_ASSETS = AssetSelection.assets("raw_bars", "validated_bars")
REGIME_ASSETS = AssetSelection.assets("market_regimes")
OPTIMIZATION_ASSETS = AssetSelection.groups("curriculum", "promotion")


def build_jobs(bar_partitions: MultiPartitionsDefinition) -> list[UnresolvedAssetJobDefinition]:
    """``ingest_job``, ``regimes_job`` and ``optimization_job``."""
    return [
        define_asset_job(
            "ingest_job",
            selection=INGEST_ASSETS,
            partitions_def=bar_partitions,
            description="Fetch and validate bars for day x instrument partitions.",
        ),
        define_asset_job(
            "regimes_job",
            selection=REGIME_ASSETS,
            description="Detect market regimes per instrument over the validated history.",
        ),
        define_asset_job(
            "optimization_job",
            selection=OPTIMIZATION_ASSETS,
            description="Run the curriculum of studies level 1 -> 4 and the promotion gates.",
            tags={"ffe/trigger": "manual"},
        ),
    ]
