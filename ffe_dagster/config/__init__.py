"""Loading of the YAML configuration shipped with the package."""

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import yaml

from ffe_dagster.config.credentials import require_credentials
from ffe_dagster.config.curriculum_checks import curriculum_problems
from ffe_dagster.config.environment import check_webhook_url
from ffe_dagster.config.errors import ConfigError, Problems
from ffe_dagster.config.universe import (
    PARTITION_GRAINS,
    SOURCE_KINDS,
    CcxtSourceSpec,
    FilesSourceSpec,
    OandaSourceSpec,
    SourceSpec,
    Universe,
    ValidationSettings,
)
from ffe_dagster.core.data.bars import Instrument, MarketKind, interval_to_timedelta
from ffe_dagster.core.study.level_specs import CurriculumSpec, parse_curriculum

__all__ = [
    "CcxtSourceSpec",
    "ConfigError",
    "FilesSourceSpec",
    "OandaSourceSpec",
    "SourceSpec",
    "Universe",
    "ValidationSettings",
    "load_curriculum",
    "load_universe",
    "require_credentials",
]


def _read_yaml(path: Path) -> dict:
    try:
        with path.open() as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"configuration file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"not valid YAML: {exc}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError(str(path), ["must hold a mapping at the top level"])
    return data


def load_curriculum(path: Path) -> CurriculumSpec:
    """Parse ``curriculum.yaml`` and check its limits; a ``ConfigError`` names the file, and
    every key out of range with the allowed range."""
    raw = _read_yaml(path)
    try:
        spec = parse_curriculum(raw)
    except ValueError as exc:
        raise ConfigError(str(path), [str(exc)]) from exc
    problems = curriculum_problems(spec, raw)
    if problems:
        raise ConfigError(str(path), problems)
    return spec


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
