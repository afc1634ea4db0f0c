"""Market regimes (BULL / BEAR / SIDEWAYS) detected from validated bars, per instrument."""

from ffe_dagster.core.regimes.detection import (
    REGIME_SCHEMA,
    Regime,
    RegimeConfig,
    confirmed_regime,
    detect_regimes,
    regime_segments,
)

__all__ = [
    "REGIME_SCHEMA",
    "Regime",
    "RegimeConfig",
    "confirmed_regime",
    "detect_regimes",
    "regime_segments",
]
