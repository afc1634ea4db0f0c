"""A backfill run in its own process, for the test that kills it at a random moment.

``python -m tests.fakes.backfill_child WAREHOUSE COINBASE_URL FIRST_DAY END_DAY NOW`` fetches
BTC/USDT 5-minute bars of ``[FIRST_DAY, END_DAY)`` into the warehouse with the same code the
``raw_bars`` asset runs, at 20 requests per second so the parent has time to kill it.
"""

import sys
from datetime import UTC, date, datetime

from ffe_dagster.assets.acquisition import Acquisition, ingest_instrument
from ffe_dagster.core.data.bars import Instrument, MarketKind
from ffe_dagster.resources.warehouse import WarehouseResource
from ffe_dagster.sources.ccxt_source import CcxtSource


def main(warehouse: str, url: str, first: str, end: str, now: str) -> None:
    """Run the backfill; the parent kills this process part way."""
    source = CcxtSource(base_url=url, max_requests_per_second=20, timeout_s=2)
    start = datetime.combine(date.fromisoformat(first), datetime.min.time(), UTC)
    stop = datetime.combine(date.fromisoformat(end), datetime.min.time(), UTC)
    ingest_instrument(
        WarehouseResource(path=warehouse),
        source,
        Instrument("BTC_USDT", "BTC/USDT", MarketKind.CRYPTO, source="ccxt"),
        [(start, stop)],
        Acquisition("BTC_USDT", source.name, source.interval),
        now=datetime.fromisoformat(now),
    )


if __name__ == "__main__":
    main(*sys.argv[1:6])
