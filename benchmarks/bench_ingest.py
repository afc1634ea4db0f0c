"""Ingestion benchmark: a history backfill and an incremental cycle against a local exchange.

``make bench-ingest`` (``python -m benchmarks.bench_ingest``) starts the test suite's local
Coinbase Exchange server (``tests/fakes/venues.py``: the real API, ccxt's ``coinbaseexchange``
client) serving the real bundled 5-minute bars, then materializes ``raw_bars`` for 4
instruments through Dagster with the ccxt source limited to 10 requests per second:

1. backfill: every day of the served history in one single-run backfill;
2. incremental: six hours later, the cycle's partitions (the newest ended day and the open day
   of each instrument), ``raw_bars`` alone and then ``raw_bars`` + ``validated_bars``.

Only ~1.75 years of two real 5-minute series are bundled (BTC/USDT and ETH/USDT, Binance,
2022-01-01 .. 2023-09-30). The server serves them under 4 product ids: BTC-USDT and ETH-USDT,
and the same two series again as BTC-USD and ETH-USD. No bar is invented; the results file says
exactly what was served. The floor is ``requests / rate``: no client can go faster while
respecting the limit. Results go to ``benchmarks/results/ingest.json`` and ``ingest.md``.
"""

import argparse
import json
import platform
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import yaml
from dagster import DagsterInstance, materialize
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from ffe_dagster.assets.ingestion import build_ingestion_assets
from ffe_dagster.config import load_universe
from ffe_dagster.config.settings import PACKAGE_DIR, PROJECT_DIR
from ffe_dagster.partitions import bar_partitions
from ffe_dagster.resources.market_data import CcxtSourceConfig, MarketDataResource
from ffe_dagster.resources.warehouse import WarehouseResource
from tests.fakes.venues import FakeCoinbaseExchange

RESULTS = PROJECT_DIR / "benchmarks" / "results"
RATE = 10.0
SAMPLES = PACKAGE_DIR / "data" / "samples"
PRODUCTS = {  # product id -> (bundled file, what it really is)
    "BTC-USDT": ("BTC_USDT_5m", "Binance BTC/USDT 5m"),
    "ETH-USDT": ("ETH_USDT_5m", "Binance ETH/USDT 5m"),
    "BTC-USD": ("BTC_USDT_5m", "the same Binance BTC/USDT 5m bars again"),
    "ETH-USD": ("ETH_USDT_5m", "the same Binance ETH/USDT 5m bars again"),
}


def _universe(tmp: Path) -> Path:
    path = tmp / "universe.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "bar_interval": "1h",
                "intervals": ["5m", "15m", "1h"],
                "history_start": "2022-01-01",
                "history_end": None,
                "sources": {"ccxt": {"kind": "ccxt", "interval": "5m"}},
                "instruments": [
                    {
                        "key": product.replace("-", "_"),
                        "symbol": product.replace("-", "/"),
                        "market": "crypto",
                        "source": "ccxt",
                    }
                    for product in PRODUCTS
                ],
            }
        )
    )
    return path


def _run(
    assets: list[Any],
    resources: dict[str, Any],
    instance: DagsterInstance,
    first: date,
    last: date,
    keys: list[str],
) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    result = materialize(
        assets,
        instance=instance,
        resources=resources,
        tags={
            ASSET_PARTITION_RANGE_START_TAG: f"{first.isoformat()}|{keys[0]}",
            ASSET_PARTITION_RANGE_END_TAG: f"{last.isoformat()}|{keys[-1]}",
        },
    )
    wall = time.monotonic() - started
    assert result.success
    for event in result.get_asset_materialization_events():
        if event.asset_key is not None and event.asset_key.to_user_string() == "raw_bars":
            meta = {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}
            return wall, meta
    raise AssertionError("raw_bars did not materialize")


def main(argv: list[str] | None = None) -> int:
    """Run both measurements and write the results."""
    parser = argparse.ArgumentParser(prog="bench_ingest")
    parser.add_argument("--days", type=int, default=0, help="backfill only this many days")
    args = parser.parse_args(argv)

    served = {p: pl.read_parquet(SAMPLES / f"{f}.parquet") for p, (f, _) in PRODUCTS.items()}
    last_bar = min(frame["ts"].max() for frame in served.values())  # type: ignore[type-var]
    assert isinstance(last_bar, datetime)
    first_day = date(2022, 1, 1)
    last_day = last_bar.date() if not args.days else first_day + timedelta(days=args.days - 1)
    now = datetime(last_day.year, last_day.month, last_day.day, 6, tzinfo=UTC)
    cycles = [now + timedelta(hours=6 * n) for n in (1, 2, 3)]  # three 6-hour cycles later

    with tempfile.TemporaryDirectory() as tmp, DagsterInstance.ephemeral() as instance:
        universe = load_universe(_universe(Path(tmp)))
        keys = [i.key for i in universe.instruments]  # the partition order: a range's ends
        assets = build_ingestion_assets(universe, bar_partitions(universe))
        raw_only = [a for a in assets if a.key.to_user_string() == "raw_bars"]
        warehouse = WarehouseResource(path=str(Path(tmp) / "warehouse.duckdb"))
        with FakeCoinbaseExchange(served, now=now, interval=timedelta(minutes=5)) as venue:

            def resources(at: datetime) -> dict[str, Any]:
                ccxt = CcxtSourceConfig(base_url=venue.url, max_requests_per_second=RATE)
                market_data = MarketDataResource(
                    directory=str(SAMPLES), files={}, ccxt=ccxt, as_of=at.isoformat()
                )
                return {"warehouse": warehouse, "market_data": market_data}

            print(f"backfill {first_day} .. {last_day} x {len(keys)} instruments at {RATE}/s")
            backfill_wall, backfill = _run(
                raw_only, resources(now), instance, first_day, last_day, keys
            )
            days = (last_day - timedelta(days=1), last_day)
            runs: list[tuple[float, dict[str, Any]]] = []
            for at, selected in zip(cycles, (raw_only, assets, assets), strict=True):
                venue.now = at  # the newest ended day and the open day of every instrument
                runs.append(_run(selected, resources(at), instance, *days, keys))
        stored = warehouse.read_table(
            "SELECT instrument, count(*) AS bars, min(ts) AS first, max(ts) AS last "
            "FROM raw_bars GROUP BY 1 ORDER BY 1"
        )
        expected = {
            p.replace("-", "_"): f.filter(pl.col("ts") < cycles[-1]).height
            for p, f in served.items()
        }
        exact = all(
            row["bars"] == expected[row["instrument"]] for row in stored.iter_rows(named=True)
        )

    def figures(wall: float, meta: dict[str, Any]) -> dict[str, Any]:
        requests = int(meta["requests"])
        floor = (requests - 1) / RATE if requests else 0.0
        return {
            "requests": requests,
            "bars_fetched": int(meta["bars_fetched"]),
            "retries": int(meta["retries"]),
            "run_wall_s": round(wall, 2),
            "fetch_wall_s": float(meta["fetch_wall_s"]),
            "rate_wait_s": float(meta["rate_wait_s"]),
            "rate_limit_floor_s": round(floor, 2),
            "fetch_ratio_to_floor": round(float(meta["fetch_wall_s"]) / floor, 3)
            if floor
            else None,
            "run_ratio_to_floor": round(wall / floor, 3) if floor else None,
            "run_beyond_rate_wait_s": round(wall - float(meta["rate_wait_s"]), 2),
        }

    report = {
        "benchmark": "ingest",
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "rate_limit_per_s": RATE,
        "served": {
            product: {
                "file": f"ffe_dagster/data/samples/{name}.parquet",
                "is": what,
                "bars_served": served[product].height,
                "first": str(served[product]["ts"].min()),
                "last": str(served[product]["ts"].max()),
            }
            for product, (name, what) in PRODUCTS.items()
        },
        "backfill": {
            "days": (last_day - first_day).days + 1,
            "instruments": len(keys),
            "partitions": ((last_day - first_day).days + 1) * len(keys),
            **figures(backfill_wall, backfill),
        },
        "incremental": [
            {"run": name, "hours_after_backfill": 6 * (n + 1), **figures(*runs[n])}
            for n, name in enumerate(
                [
                    "raw_bars",
                    "raw_bars + validated_bars, first validation in the process",
                    "raw_bars + validated_bars, second cycle",
                ]
            )
        ],
        "note": "The first validation in a process imports Great Expectations (about 6 s on "
        "this machine); a Dagster run in its own process pays that import once.",
        "stored_bars_equal_served": exact,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ingest.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "ingest.md").write_text(_markdown(report))
    print(_markdown(report))
    return 0


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def _markdown(report: dict[str, Any]) -> str:
    b = report["backfill"]
    served = _table(
        ["product id", "what it is", "file", "bars", "first", "last"],
        [
            [p, s["is"], f"`{s['file']}`", f"{s['bars_served']:,}", s["first"], s["last"]]
            for p, s in report["served"].items()
        ],
    )
    backfill_header = ["requests", "bars", "retries", "floor (requests / rate)", "fetch wall"]
    backfill_header += ["fetch / floor", "Dagster run wall", "run / floor"]
    backfill_row = [f"{b['requests']:,}", f"{b['bars_fetched']:,}", b["retries"]]
    backfill_row += [f"{b['rate_limit_floor_s']} s", f"{b['fetch_wall_s']} s"]
    backfill_row += [f"**{b['fetch_ratio_to_floor']}x**", f"{b['run_wall_s']} s"]
    backfill_row += [f"{b['run_ratio_to_floor']}x"]
    backfill = _table(backfill_header, [backfill_row])
    cycle_rows = []
    for r in report["incremental"]:
        row = [r["run"], r["requests"], r["bars_fetched"], f"{r['rate_wait_s']} s"]
        row += [f"{r['run_wall_s']} s", f"**{r['run_beyond_rate_wait_s']} s**"]
        cycle_rows.append(row)
    cycles = _table(
        ["run", "requests", "bars", "rate-limit wait", "run wall", "beyond the rate-limit wait"],
        cycle_rows,
    )
    return f"""# Ingestion benchmark

Machine: {report["machine"]}; local Coinbase Exchange server (`tests/fakes/venues.py`), real ccxt
`coinbaseexchange` client, rate limit {report["rate_limit_per_s"]:.0f} requests/s, Dagster
in-process runs (ephemeral instance), DuckDB warehouse on local disk.

## What was served

{served}

BTC-USD and ETH-USD are copies of the two real series under other ids, to reach 4 instruments;
1.75 years are served because that is what is bundled. Stored bars equal the served ones:
**{report["stored_bars_equal_served"]}**.

## Backfill: {b["days"]} days x {b["instruments"]} instruments, {b["partitions"]:,} partitions

{backfill}

"fetch wall" is the asset's own time fetching and storing (every completed day is written to
DuckDB as soon as it is in); the Dagster run adds the bookkeeping of one materialization event
per partition. One run (single-run backfill policy).

## Incremental cycles, 6, 12 and 18 hours after the backfill

Each run covers the newest ended day and the open day of every instrument.

{cycles}

{report["note"]}
"""


if __name__ == "__main__":
    raise SystemExit(main())
