"""One instrument-year ingested as day, week and month partitions (part of ``bench-cycle``).

``python -m benchmarks.bench_grain FOLDER`` materializes ``raw_bars`` and ``validated_bars`` of
BTC_USDT 2023 (the bundled hourly bars) in one single-run backfill per grain, each into its own
SQLite Dagster instance and warehouse, and prints one JSON line: per grain the partitions, the
run's wall, the time inside the asset bodies (their ``compute_s`` metadata) and the share that
is Dagster's own work.
"""

import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from dagster import DagsterInstance, materialize
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from ffe_dagster.assets.ingestion import build_ingestion_assets
from ffe_dagster.config import load_universe
from ffe_dagster.config.settings import PACKAGE_DIR
from ffe_dagster.partitions import DATE_DIM, bar_partitions
from ffe_dagster.resources.market_data import MarketDataResource
from ffe_dagster.resources.warehouse import WarehouseResource

SAMPLES = PACKAGE_DIR / "data" / "samples"


def measure(folder: Path, grain: str) -> dict[str, Any]:
    """Backfill BTC_USDT 2023 at ``grain`` and time it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "universe.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "bar_interval": "1h",
                "history_start": "2023-01-01",
                "history_end": "2023-12-31",
                "partition_grain": grain,
                "sources": {"files": {"kind": "files", "interval": "1h"}},
                "instruments": [
                    {
                        "key": "BTC_USDT",
                        "symbol": "BTC/USDT",
                        "market": "crypto",
                        "file": "BTC_USDT_1h.parquet",
                    }
                ],
            }
        )
    )
    universe = load_universe(path)
    partitions = bar_partitions(universe)
    windows = partitions.get_partitions_def_for_dimension(DATE_DIM).get_partition_keys()
    resources = {
        "warehouse": WarehouseResource(path=str(folder / "warehouse.duckdb")),
        "market_data": MarketDataResource(directory=str(SAMPLES), files=universe.files),
    }
    (folder / "dagster_home").mkdir(exist_ok=True)
    with DagsterInstance.local_temp(tempdir=str(folder / "dagster_home")) as instance:
        started = time.monotonic()
        result = materialize(
            build_ingestion_assets(universe, partitions),
            instance=instance,
            resources=resources,
            tags={
                ASSET_PARTITION_RANGE_START_TAG: f"{windows[0]}|BTC_USDT",
                ASSET_PARTITION_RANGE_END_TAG: f"{windows[-1]}|BTC_USDT",
            },
        )
        wall = time.monotonic() - started
    bodies: dict[str, float] = {}
    for event in result.get_asset_materialization_events():
        value = getattr(event.materialization.metadata.get("compute_s"), "value", None)
        if event.asset_key is not None and isinstance(value, int | float):
            bodies[event.asset_key.to_user_string()] = float(value)
    body = sum(bodies.values())
    return {
        "partitions": len(windows),
        "wall_s": round(wall, 2),
        "compute_s": round(body, 2),
        "share": round(1 - body / wall, 3),
    }


def main(folder: str) -> None:
    """Measure month first (it pays the imports' first-call costs), then week and day."""
    root = Path(folder)
    measure(root / "warmup", "month")  # GX and DuckDB first-call costs out of the way
    print(json.dumps({g: measure(root / g, g) for g in ("month", "week", "day")}))


if __name__ == "__main__":
    main(sys.argv[1])
