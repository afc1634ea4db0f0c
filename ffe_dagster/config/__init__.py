"""Loading of the YAML configuration shipped with the package."""

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import yaml

from ffe_dagster.core.bars import Instrument, MarketKind
from ffe_dagster.core.curriculum import CurriculumSpec, parse_curriculum


@dataclass(frozen=True, slots=True)
class Universe:
    """The instruments, their sample files, the bar interval and the history range."""

    bar_interval: str
    history_start: date
    history_end: date | None
    instruments: tuple[Instrument, ...]
    files: dict[str, str]

    def instrument(self, key: str) -> Instrument:
        """The instrument with partition key ``key``."""
        for inst in self.instruments:
            if inst.key == key:
                return inst
        raise KeyError(f"unknown instrument {key!r}; known: {[i.key for i in self.instruments]}")


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
            )
            for i in raw["instruments"]
        )
        return Universe(
            bar_interval=str(raw["bar_interval"]),
            history_start=raw["history_start"],
            history_end=raw.get("history_end"),
            instruments=instruments,
            files={str(i["key"]): str(i["file"]) for i in raw["instruments"] if "file" in i},
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: invalid universe configuration: {exc!r}") from exc
