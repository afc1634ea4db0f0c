"""``promotion.yaml``: every promotion limit, parsed and checked into the frozen
``PromotionConfig`` of ``ffe_dagster.core.promotion.config``.

The file must give every key of every stage (its values are the user's settings, so none is
filled in silently) and no other; each problem names its key path (``warm.max_drawdown_pct must
be in (0, 100], got 0``), and the ``ConfigError`` names the file.
"""

from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from ffe_dagster.config.errors import Problems
from ffe_dagster.config.yaml_files import read_yaml
from ffe_dagster.core.promotion.config import (
    ColdGateConfig,
    InvalidLimits,
    LimitedGateConfig,
    PromotionConfig,
    SafetyLimits,
    WarmGateConfig,
)

StageLimits = ColdGateConfig | WarmGateConfig | LimitedGateConfig | SafetyLimits
# The file's sections, in the order of PromotionConfig's fields.
SECTIONS: Mapping[str, type[StageLimits]] = {
    "cold": ColdGateConfig,
    "warm": WarmGateConfig,
    "limited": LimitedGateConfig,
    "safety": SafetyLimits,
}


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _typed(p: Problems, key: str, kind: object, value: object) -> object | None:
    """``value`` as the field's type (int, float or a tuple of ints), or None after recording
    why it is not one."""
    if kind is int:
        if _whole(value):
            return value
        p.add(f"{key} must be a whole number, got {value!r}")
        return None
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        p.add(f"{key} must be a number, got {value!r}")
        return None
    if isinstance(value, list) and value and all(_whole(v) for v in value):
        return tuple(value)
    p.add(f"{key} must be a list of whole numbers, got {value!r}")
    return None


def _section(p: Problems, name: str, raw: object) -> StageLimits | None:
    cls = SECTIONS[name]
    if not isinstance(raw, dict):
        p.add(f"{name} must be a mapping of its limits, got {raw!r}")
        return None
    known = {f.name: f.type for f in fields(cls)}
    for key in raw:
        if key not in known:
            p.add(f"{name}.{key} is not a known limit; known: {sorted(known)}")
    values: dict[str, Any] = {}
    for key, kind in known.items():
        if key not in raw:
            p.add(f"{name}.{key} is missing")
            continue
        value = _typed(p, f"{name}.{key}", kind, raw[key])
        if value is not None:
            values[key] = value
    if len(values) < len(known):
        return None
    try:
        return cls(**values)
    except InvalidLimits as exc:
        for problem in exc.problems:
            p.add(f"{name}.{problem}")
        return None


def parse_promotion(raw: Mapping[str, Any], source: str) -> PromotionConfig:
    """Build a ``PromotionConfig`` from the parsed YAML; every problem is raised at once as a
    ``ConfigError`` naming ``source``."""
    p = Problems()
    for name in raw:
        if name not in SECTIONS:
            p.add(f"{name} is not a known section; known: {list(SECTIONS)}")
    parsed: dict[str, Any] = {}
    for name in SECTIONS:
        if name not in raw:
            p.add(f"{name} is missing")
        elif (limits := _section(p, name, raw[name])) is not None:
            parsed[name] = limits
    p.raise_if_any(source)
    return PromotionConfig(**parsed)


def load_promotion(path: Path) -> PromotionConfig:
    """Parse ``promotion.yaml`` and check its limits; a ``ConfigError`` names the file and every
    key that is missing, unknown or out of range."""
    return parse_promotion(read_yaml(path), str(path))
