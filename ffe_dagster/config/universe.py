"""The universe's types: instruments' sources, the bar-quality thresholds and the ``Universe``."""

from dataclasses import dataclass, field
from datetime import date, timedelta

from ffe_dagster.core.data.bars import Instrument, interval_to_timedelta
from ffe_dagster.core.data.validation_rules import ValidationConfig

PARTITION_GRAINS = ("day", "week", "month")  # the time grain of bar partitions; weeks from Monday


@dataclass(frozen=True, slots=True)
class FilesSourceSpec:
    """Local Parquet/CSV files: one per instrument (``file:`` in its entry), bars of
    ``interval``; ``directory`` defaults to the bundled samples (``FFE_SAMPLES_DIR``)."""

    interval: str = "1h"
    directory: str | None = None
    columns: tuple[tuple[str, str], ...] = ()
    ts_unit: str | None = None


@dataclass(frozen=True, slots=True)
class CcxtSourceSpec:
    """Any ccxt exchange's public candles (default Coinbase's Exchange API,
    ``coinbaseexchange``), fetched at ``interval`` and at most ``max_requests_per_second``."""

    exchange: str = "coinbaseexchange"
    interval: str = "5m"
    max_requests_per_second: float = 3.0
    base_url: str | None = None
    timeout_s: float = 10.0  # each socket read
    deadline_s: float = 30.0  # a whole request: connect, headers and body
    outage_budget_s: float = 120.0  # backoff one request may spend on transient failures
    backoff_s: float = 1.0
    page_bars: int = 300


@dataclass(frozen=True, slots=True)
class OandaSourceSpec:
    """OANDA v20 candles (``practice`` or ``live``; ``price`` M = mid, B = bid, A = ask);
    the token is read from ``OANDA_API_TOKEN`` at run time, never from this file."""

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


SourceSpec = FilesSourceSpec | CcxtSourceSpec | OandaSourceSpec
SOURCE_KINDS: dict[str, type[FilesSourceSpec] | type[CcxtSourceSpec] | type[OandaSourceSpec]] = {
    "files": FilesSourceSpec,
    "ccxt": CcxtSourceSpec,
    "oanda": OandaSourceSpec,
}


@dataclass(frozen=True, slots=True)
class ValidationSettings:
    """Thresholds of the bar-quality suite (see ``ffe_dagster.core.data.validation_rules``)."""

    max_abs_log_return: float = 0.5
    max_quarantine_fraction: float = 0.01
    max_open_gap: timedelta = timedelta(hours=6)
    stale_grace: timedelta = timedelta(minutes=5)
    forex_stale_open: timedelta = timedelta(hours=2)
    forex_stale_closed: timedelta = timedelta(hours=72)


@dataclass(frozen=True, slots=True)
class Universe:
    """The instruments, their sources, the bar intervals and the history range.

    Each instrument's source delivers its finest interval, fetched once; ``intervals`` are
    derived from it by resampling (those not coarser than the fetched one are skipped for that
    instrument); ``bar_interval`` is the one ``validated_bars`` holds for the optimizer.
    ``history_end`` None means "up to now": the newest partition is then open and
    refreshed by every cycle. ``partition_grain`` is the time window of one bar partition.
    """

    bar_interval: str
    history_start: date
    history_end: date | None
    instruments: tuple[Instrument, ...]
    files: dict[str, str]
    intervals: tuple[str, ...] = ()
    sources: dict[str, SourceSpec] = field(default_factory=dict)
    validation: ValidationSettings = ValidationSettings()
    partition_grain: str = "month"

    def instrument(self, key: str) -> Instrument:
        """The instrument with partition key ``key``."""
        for inst in self.instruments:
            if inst.key == key:
                return inst
        raise KeyError(f"unknown instrument {key!r}; known: {[i.key for i in self.instruments]}")

    def source_spec(self, key: str) -> SourceSpec:
        """The source configuration that delivers instrument ``key``."""
        name = self.instrument(key).source
        return self.sources.get(name) or FilesSourceSpec(interval=self.bar_interval)

    def fetch_interval(self, key: str) -> str:
        """The interval instrument ``key`` is fetched at (its finest)."""
        return self.source_spec(key).interval

    def derived_intervals(self, key: str) -> tuple[str, ...]:
        """The configured intervals that can be derived for instrument ``key``, finest first."""
        fine = interval_to_timedelta(self.fetch_interval(key))
        wanted = {*self.intervals, self.bar_interval, self.fetch_interval(key)}
        usable = [
            i
            for i in wanted
            if not interval_to_timedelta(i) % fine and interval_to_timedelta(i) >= fine
        ]
        return tuple(sorted(usable, key=interval_to_timedelta))

    def validation_config(self, key: str) -> ValidationConfig:
        """The bar-quality suite's configuration for instrument ``key``."""
        inst = self.instrument(key)
        v = self.validation
        return ValidationConfig(
            max_abs_log_return=v.max_abs_log_return,
            require_volume=inst.has_volume,
            max_quarantine_fraction=v.max_quarantine_fraction,
            interval=self.fetch_interval(key),
            market=inst.market,
            max_open_gap=v.max_open_gap,
            stale_grace=v.stale_grace,
            forex_stale_open=v.forex_stale_open,
            forex_stale_closed=v.forex_stale_closed,
        )
