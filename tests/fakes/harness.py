"""Test wiring: real bundled bars, the local venues, and the ingestion assets pointed at them."""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import yaml
from dagster import (
    AssetsDefinition,
    DagsterInstance,
    ExecuteInProcessResult,
    materialize,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from ffe_dagster.assets.ingestion import build_ingestion_assets
from ffe_dagster.config import Universe, load_universe
from ffe_dagster.config.settings import PACKAGE_DIR
from ffe_dagster.partitions import bar_partitions
from ffe_dagster.resources.market_data import (
    CcxtSourceConfig,
    MarketDataResource,
    OandaSourceConfig,
)
from ffe_dagster.resources.warehouse import WarehouseResource
from tests.fakes.venues import FakeCoinbaseExchange, FakeOanda

SAMPLES = PACKAGE_DIR / "data" / "samples"
# Fast enough for tests, still exercising the limiter, the backoff, the read timeout, the
# request deadline and the outage budget (2 s of backoff instead of 120 s).
FAST: dict[str, Any] = {
    "max_requests_per_second": 200.0,
    "backoff_s": 0.01,
    "timeout_s": 0.3,
    "deadline_s": 1.0,
    "outage_budget_s": 2.0,
}
# For a test that counts the retries one injected fault causes: the clean retry after it must
# not time out on its own when a loaded machine stalls the test process (CI saw a second
# "deadline" at FAST's 1 s), and it still leaves each trickled byte (50 ms apart) far inside.
SLACK: dict[str, Any] = {"timeout_s": 1.0, "deadline_s": 2.0}


def real_bars(name: str) -> pl.DataFrame:
    """A bundled sample (``BTC_USDT_5m``, ``GBP_USD_1h``, ...)."""
    return pl.read_parquet(SAMPLES / f"{name}.parquet")


def utc(*args: int) -> datetime:
    """A UTC datetime."""
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def between(bars: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    """The rows with ``start <= ts < end``."""
    return bars.filter((pl.col("ts") >= start) & (pl.col("ts") < end))


@contextmanager
def coinbase(now: datetime, **products: pl.DataFrame) -> Iterator[FakeCoinbaseExchange]:
    """A running Coinbase Exchange serving 5-minute bars (default: real BTC/USDT)."""
    served = products or {"BTC-USDT": real_bars("BTC_USDT_5m")}
    with FakeCoinbaseExchange(served, now=now, interval=timedelta(minutes=5)) as venue:
        yield venue


@contextmanager
def oanda(now: datetime) -> Iterator[FakeOanda]:
    """A running OANDA v20 server serving real GBP/USD hourly bars (with tick volume)."""
    with FakeOanda(
        {"GBP_USD": real_bars("GBP_USD_1h")}, now=now, interval=timedelta(hours=1)
    ) as venue:
        yield venue


def live_universe(tmp: Path, grain: str = "day") -> Universe:
    """BTC_USDT from a ccxt exchange (5m) and GBP_USD from OANDA (1h), open-ended history,
    partitioned by ``grain`` x instrument (day: the tests pick single days)."""
    path = tmp / "universe.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "bar_interval": "1h",
                "intervals": ["5m", "15m", "1h"],
                "history_start": "2022-01-01",
                "history_end": None,
                "partition_grain": grain,
                "sources": {
                    "ccxt": {"kind": "ccxt", "interval": "5m"},
                    "oanda": {"kind": "oanda", "interval": "1h"},
                },
                "instruments": [
                    {"key": "BTC_USDT", "symbol": "BTC/USDT", "market": "crypto", "source": "ccxt"},
                    {"key": "GBP_USD", "symbol": "GBP_USD", "market": "forex", "source": "oanda"},
                ],
            }
        )
    )
    return load_universe(path)


@dataclass
class Ingestion:
    """The ingestion assets of ``live_universe`` wired to local venues and a temporary
    warehouse; ``run`` materializes ``raw_bars`` and ``validated_bars`` for a day range."""

    universe: Universe
    warehouse: WarehouseResource
    instance: DagsterInstance
    coinbase_url: str | None = None
    oanda_url: str | None = None
    oanda_token: str | None = FakeOanda.token
    max_candles: int = 5000

    @property
    def assets(self) -> list[AssetsDefinition]:
        return build_ingestion_assets(self.universe, bar_partitions(self.universe))

    def market_data(self, now: datetime) -> MarketDataResource:
        return MarketDataResource(
            directory=str(SAMPLES),
            files={},
            ccxt=CcxtSourceConfig(base_url=self.coinbase_url, **FAST),
            oanda=OandaSourceConfig(
                interval="1h", base_url=self.oanda_url, max_candles=self.max_candles, **FAST
            ),
            oanda_token=self.oanda_token,
            as_of=now.isoformat(),
        )

    def run(
        self,
        instrument: str,
        first_day: date,
        last_day: date,
        *,
        now: datetime,
        assets: Sequence[str] = ("raw_bars", "validated_bars"),
        run_config: dict[str, Any] | None = None,
    ) -> ExecuteInProcessResult:
        """Materialize ``assets`` for days ``first_day..last_day`` of ``instrument``."""
        selected = [a for a in self.assets if a.key.to_user_string() in assets]
        return materialize(
            selected,
            instance=self.instance,
            resources={"warehouse": self.warehouse, "market_data": self.market_data(now)},
            tags={
                ASSET_PARTITION_RANGE_START_TAG: f"{first_day.isoformat()}|{instrument}",
                ASSET_PARTITION_RANGE_END_TAG: f"{last_day.isoformat()}|{instrument}",
            },
            run_config=run_config,
            raise_on_error=False,
        )

    def raw(self, instrument: str) -> pl.DataFrame:
        return self.warehouse.read_bars("raw_bars", instrument)


def materialization_metadata(result: ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    """The metadata values of ``asset``'s materialization (or Failure) in ``result``."""
    for event in result.get_asset_materialization_events():
        if event.asset_key is not None and event.asset_key.to_user_string() == asset:
            return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}
    for event in result.all_events:
        if event.is_step_failure and event.step_key == asset:
            data = event.step_failure_data
            if data and data.user_failure_data:
                return {
                    k: getattr(v, "value", v) for k, v in data.user_failure_data.metadata.items()
                }
    raise AssertionError(f"no metadata of {asset} in the run")


def check_outcomes(result: ExecuteInProcessResult) -> dict[str, bool]:
    """Passed/failed per asset check of the run."""
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
