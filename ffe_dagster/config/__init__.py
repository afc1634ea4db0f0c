"""Loading of the YAML configuration shipped with the package."""

from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import yaml

from ffe_dagster.core.bars import Instrument, MarketKind, interval_to_timedelta
from ffe_dagster.core.curriculum import CurriculumSpec, parse_curriculum
from ffe_dagster.core.validation_rules import ValidationConfig


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
    timeout_s: float = 10.0
    max_attempts: int = 6
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
    timeout_s: float = 10.0
    max_attempts: int = 6
    backoff_s: float = 1.0
    max_candles: int = 5000


SourceSpec = FilesSourceSpec | CcxtSourceSpec | OandaSourceSpec
_SOURCE_KINDS: dict[str, type[FilesSourceSpec] | type[CcxtSourceSpec] | type[OandaSourceSpec]] = {
    "files": FilesSourceSpec,
    "ccxt": CcxtSourceSpec,
    "oanda": OandaSourceSpec,
}


@dataclass(frozen=True, slots=True)
class ValidationSettings:
    """Thresholds of the bar-quality suite (see ``ffe_dagster.core.validation_rules``)."""

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
    ``history_end`` None means "up to now": the newest day partition is then open and
    refreshed by every cycle.
    """

    bar_interval: str
    history_start: date
    history_end: date | None
    instruments: tuple[Instrument, ...]
    files: dict[str, str]
    intervals: tuple[str, ...] = ()
    sources: dict[str, SourceSpec] = field(default_factory=dict)
    validation: ValidationSettings = ValidationSettings()

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


def _read_yaml(path: Path) -> dict:
    try:
        with path.open() as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"configuration file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping at the top level")
    return data


def load_curriculum(path: Path) -> CurriculumSpec:
    """Parse ``curriculum.yaml``; errors name the file."""
    try:
        return parse_curriculum(_read_yaml(path))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def _date(value: object) -> date:
    # YAML reads 2020-01-01 as a date, "2020-01-01" as a string: accept both.
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _duration(value: object) -> timedelta:
    return interval_to_timedelta(str(value))


def _source_spec(name: str, raw: dict) -> SourceSpec:
    kind = str(raw.get("kind", name))
    if kind not in _SOURCE_KINDS:
        raise ValueError(f"source {name!r}: kind must be one of {sorted(_SOURCE_KINDS)}")
    options = {k: v for k, v in raw.items() if k != "kind"}
    if kind == "files" and "columns" in options:
        options["columns"] = tuple(sorted(dict(options["columns"]).items()))
    spec = _SOURCE_KINDS[kind](**options)
    interval_to_timedelta(spec.interval)
    if isinstance(spec, CcxtSourceSpec | OandaSourceSpec) and spec.max_requests_per_second <= 0:
        raise ValueError(f"source {name!r}: max_requests_per_second must be > 0")
    return spec


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
    """Parse ``universe.yaml``; errors name the file and the field."""
    raw = _read_yaml(path)
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
        )
        _check_intervals(universe)
        return universe
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: invalid universe configuration: {exc!r}") from exc
