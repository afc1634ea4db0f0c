"""The market-data resource: which sources the ingestion asset reads bars from, and its clock."""

from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from dagster import Config, ConfigurableResource, EnvVar

from ffe_dagster.config import CcxtSourceSpec, FilesSourceSpec, OandaSourceSpec, Universe
from ffe_dagster.config.credentials import OANDA_TOKEN_ENV
from ffe_dagster.sources.base import BarSource, RetryPolicy
from ffe_dagster.sources.ccxt_source import CcxtSource
from ffe_dagster.sources.files import FileSource
from ffe_dagster.sources.oanda import OandaSource


class CcxtSourceConfig(Config):
    """A ccxt exchange's public candles (see ``ffe_dagster.sources.ccxt_source``)."""

    exchange: str = "coinbaseexchange"
    interval: str = "5m"
    max_requests_per_second: float = 3.0
    base_url: str | None = None
    timeout_s: float = 10.0  # each socket read
    deadline_s: float = 30.0  # a whole request: connect, headers and body
    outage_budget_s: float = 120.0  # backoff one request may spend on transient failures
    backoff_s: float = 1.0
    page_bars: int = 300


class OandaSourceConfig(Config):
    """OANDA v20 candles (see ``ffe_dagster.sources.oanda``); the token is a resource field."""

    environment: str = "practice"
    interval: str = "5m"
    price: str = "M"
    max_requests_per_second: float = 2.0
    base_url: str | None = None
    timeout_s: float = 10.0  # each socket read
    deadline_s: float = 30.0  # a whole request: connect, headers and body
    outage_budget_s: float = 120.0  # backoff one request may spend on transient failures
    backoff_s: float = 1.0
    max_candles: int = 5000


class MarketDataResource(ConfigurableResource):
    """Where bars come from: local files (the bundled real samples by default), a ccxt
    exchange and OANDA. ``oanda_token`` is bound to the ``OANDA_API_TOKEN`` environment variable
    through ``EnvVar`` (Dagster shows the variable's name, never its value). ``as_of`` replaces
    the clock (an ISO-8601 instant) for replays of history against a recorded or local venue."""

    directory: str
    files: dict[str, str]
    file_interval: str = "1h"
    file_columns: dict[str, str] | None = None
    file_ts_unit: str | None = None
    ccxt: CcxtSourceConfig | None = None
    oanda: OandaSourceConfig | None = None
    oanda_token: str | None = None
    as_of: str | None = None

    def now(self) -> datetime:
        """The current instant in UTC (``as_of`` when set)."""
        if self.as_of:
            moment = datetime.fromisoformat(self.as_of)
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        return datetime.now(UTC)

    def source(self) -> FileSource:
        """The file source over the configured folder."""
        return FileSource(
            directory=Path(self.directory),
            files=self.files,
            columns=self.file_columns or {},
            interval=self.file_interval,
            ts_unit=self.file_ts_unit,
        )

    def sources(self) -> dict[str, BarSource]:
        """Every configured source by name (``files``, ``ccxt``, ``oanda``); each remote one
        owns its rate limiter, so instruments of one venue share that venue's budget."""
        out: dict[str, BarSource] = {"files": self.source()}
        if self.ccxt is not None:
            c = self.ccxt
            out["ccxt"] = CcxtSource(
                exchange_id=c.exchange,
                interval=c.interval,
                max_requests_per_second=c.max_requests_per_second,
                base_url=c.base_url,
                timeout_s=c.timeout_s,
                deadline_s=c.deadline_s,
                retry=RetryPolicy(outage_budget_s=c.outage_budget_s, base_delay_s=c.backoff_s),
                page_bars=c.page_bars,
            )
        if self.oanda is not None:
            o = self.oanda
            out["oanda"] = OandaSource(
                token=self.oanda_token,
                environment=o.environment,
                interval=o.interval,
                price=o.price,
                max_requests_per_second=o.max_requests_per_second,
                base_url=o.base_url,
                timeout_s=o.timeout_s,
                deadline_s=o.deadline_s,
                retry=RetryPolicy(outage_budget_s=o.outage_budget_s, base_delay_s=o.backoff_s),
                max_candles=o.max_candles,
            )
        return out


def market_data_resource(universe: Universe, samples_dir: Path) -> MarketDataResource:
    """The resource for ``universe``'s sources; ``samples_dir`` is the default file folder.

    The OANDA token is bound only when an instrument reads from OANDA, so a file-only universe
    never asks for the variable.
    """
    files = next(
        (s for s in universe.sources.values() if isinstance(s, FilesSourceSpec)),
        FilesSourceSpec(interval=universe.bar_interval),
    )
    ccxt = next((s for s in universe.sources.values() if isinstance(s, CcxtSourceSpec)), None)
    oanda = next((s for s in universe.sources.values() if isinstance(s, OandaSourceSpec)), None)
    uses_oanda = oanda is not None and any(
        isinstance(universe.sources.get(i.source), OandaSourceSpec) for i in universe.instruments
    )
    return MarketDataResource(
        directory=files.directory or str(samples_dir),
        files=dict(universe.files),
        file_interval=files.interval,
        file_columns=dict(files.columns),
        file_ts_unit=files.ts_unit,
        ccxt=CcxtSourceConfig(**asdict(ccxt)) if ccxt else None,
        oanda=OandaSourceConfig(**asdict(oanda)) if oanda else None,
        oanda_token=EnvVar(OANDA_TOKEN_ENV) if uses_oanda else None,  # pyright: ignore[reportArgumentType]
    )
