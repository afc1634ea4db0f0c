"""``universe.yaml``: the instruments, their sources, the bar-quality thresholds and the history
range, as a ``Universe`` (``load_universe`` parses and checks the file)."""

from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from ffe_dagster.config.environment import check_webhook_url
from ffe_dagster.config.errors import ConfigError, Problems
from ffe_dagster.config.yaml_files import read_yaml
from ffe_dagster.core.data.bars import Instrument, MarketKind, interval_to_timedelta
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


def _date(value: object) -> date:
    # YAML reads 2020-01-01 as a date, "2020-01-01" as a string: accept both.
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _duration(value: object) -> timedelta:
    return interval_to_timedelta(str(value))


def _source_spec(name: str, raw: dict) -> SourceSpec:
    kind = str(raw.get("kind", name))
    if kind not in SOURCE_KINDS:
        raise ValueError(f"source {name!r}: kind must be one of {sorted(SOURCE_KINDS)}")
    options = {k: v for k, v in raw.items() if k != "kind"}
    if kind == "files" and "columns" in options:
        options["columns"] = tuple(sorted(dict(options["columns"]).items()))
    spec = SOURCE_KINDS[kind](**options)
    interval_to_timedelta(spec.interval)
    return spec


_TS_UNITS = ("s", "ms", "us", "ns")  # ffe_dagster.sources.files.TS_UNITS
_OANDA_PRICES = ("M", "B", "A")
_OANDA_ENVIRONMENTS = ("practice", "live")
_OANDA_MAX_CANDLES = 5000


def _source_problems(p: Problems, name: str, spec: SourceSpec) -> None:
    key = f"sources.{name}"
    if isinstance(spec, FilesSourceSpec):
        if spec.ts_unit is not None:
            p.one_of(f"{key}.ts_unit", spec.ts_unit, _TS_UNITS)
        return
    p.at_least(f"{key}.max_requests_per_second", spec.max_requests_per_second, 0.0, strict=True)
    p.at_least(f"{key}.timeout_s", spec.timeout_s, 0.0, strict=True)
    p.at_least(f"{key}.deadline_s", spec.deadline_s, 0.0, strict=True)
    p.at_least(f"{key}.outage_budget_s", spec.outage_budget_s, 0.0)
    p.at_least(f"{key}.backoff_s", spec.backoff_s, 0.0)
    if spec.base_url is not None:
        check_webhook_url(f"{key}.base_url", str(spec.base_url), p)
    if isinstance(spec, CcxtSourceSpec):
        p.at_least(f"{key}.page_bars", spec.page_bars, 1)
    else:
        p.one_of(f"{key}.environment", spec.environment, _OANDA_ENVIRONMENTS)
        p.one_of(f"{key}.price", spec.price, _OANDA_PRICES)
        p.within(f"{key}.max_candles", spec.max_candles, 1, _OANDA_MAX_CANDLES)


def _universe_problems(universe: Universe) -> list[str]:
    p = Problems()
    if universe.history_end is not None and universe.history_start >= universe.history_end:
        p.add(
            f"history_start must be before history_end (or history_end null), got "
            f"{universe.history_start} >= {universe.history_end}"
        )
    p.one_of("partition_grain", universe.partition_grain, PARTITION_GRAINS)
    keys = [i.key for i in universe.instruments]
    if not keys:
        p.add("instruments must list at least one instrument")
    if len(keys) != len(set(keys)):
        p.add(f"instruments: every key must be unique, got {keys}")
    for name, spec in universe.sources.items():
        _source_problems(p, name, spec)
    v = universe.validation
    p.at_least("validation.max_abs_log_return", v.max_abs_log_return, 0.0, strict=True)
    p.within("validation.max_quarantine_fraction", v.max_quarantine_fraction, 0.0, 1.0)
    for name in ("max_open_gap", "stale_grace", "forex_stale_open", "forex_stale_closed"):
        if getattr(v, name) <= timedelta(0):
            p.add(f"validation.{name} must be a positive duration (e.g. 5m, 6h)")
    try:
        _check_intervals(universe)
    except ValueError as exc:
        p.add(str(exc))
    return p.items


def _validation_settings(raw: dict) -> ValidationSettings:
    durations = {"max_open_gap", "stale_grace", "forex_stale_open", "forex_stale_closed"}
    values: dict[str, Any] = {
        k: _duration(v) if k in durations else float(v) for k, v in raw.items()
    }
    return ValidationSettings(**values)


def _check_intervals(universe: Universe) -> None:
    kinds = [type(spec).__name__ for spec in universe.sources.values()]
    if len(kinds) != len(set(kinds)):
        raise ValueError("configure at most one source of each kind (files, ccxt, oanda)")
    day = timedelta(days=1)
    for interval in {*universe.intervals, universe.bar_interval}:
        if day % interval_to_timedelta(interval):
            raise ValueError(f"interval {interval} does not divide a day into whole bars")
    for inst in universe.instruments:
        if inst.source not in universe.sources:
            raise ValueError(
                f"instrument {inst.key}: unknown source {inst.source!r}; "
                f"configured: {sorted(universe.sources)}"
            )
        if inst.source == "files" or isinstance(universe.sources[inst.source], FilesSourceSpec):
            if inst.key not in universe.files:
                raise ValueError(f"instrument {inst.key} reads files but names no 'file'")
        if universe.bar_interval not in universe.derived_intervals(inst.key):
            raise ValueError(
                f"instrument {inst.key}: bar_interval {universe.bar_interval} cannot be derived "
                f"from its source's {universe.fetch_interval(inst.key)} bars"
            )


def load_universe(path: Path) -> Universe:
    """Parse ``universe.yaml`` and check its limits; a ``ConfigError`` names the file and every
    key out of range."""
    raw = read_yaml(path)
    try:
        instruments = tuple(
            Instrument(
                key=str(i["key"]),
                symbol=str(i["symbol"]),
                market=MarketKind(i["market"]),
                has_volume=bool(i.get("has_volume", True)),
                source=str(i.get("source", "files")),
            )
            for i in raw["instruments"]
        )
        bar_interval = str(raw["bar_interval"])
        sources = {
            str(name): _source_spec(str(name), dict(spec or {}))
            for name, spec in (raw.get("sources") or {}).items()
        }
        sources.setdefault("files", FilesSourceSpec(interval=bar_interval))
        universe = Universe(
            bar_interval=bar_interval,
            history_start=_date(raw["history_start"]),
            history_end=_date(raw["history_end"]) if raw.get("history_end") else None,
            instruments=instruments,
            files={str(i["key"]): str(i["file"]) for i in raw["instruments"] if "file" in i},
            intervals=tuple(str(i) for i in raw.get("intervals") or [bar_interval]),
            sources=sources,
            validation=_validation_settings(dict(raw.get("validation") or {})),
            partition_grain=str(raw.get("partition_grain", "month")),
        )
    except KeyError as exc:
        raise ConfigError(str(path), [f"missing key {exc.args[0]!r}"]) from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(path), [f"invalid universe configuration: {exc}"]) from exc
    problems = _universe_problems(universe)
    if problems:
        raise ConfigError(str(path), problems)
    return universe
