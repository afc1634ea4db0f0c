"""Raw to validated bars: the bar schema and market calendars, resampling, the bar-quality gate
(Great Expectations) and which bar partitions a cycle must ingest again.
"""

from ffe_dagster.core.data.bars import (
    OHLCV_SCHEMA,
    TS_DTYPE,
    Instrument,
    MarketKind,
    MarketSchedule,
    closed_bars,
    deduplicate_bars,
    empty_bars,
    find_gaps,
    floor_time,
    interval_to_timedelta,
    normalize_bars,
)
from ffe_dagster.core.data.partition_state import (
    PartitionState,
    WindowPlan,
    bars_fingerprint,
    rules_key,
    stale_windows,
)
from ffe_dagster.core.data.resample import resample_bars
from ffe_dagster.core.data.validation import (
    QUARANTINE_SCHEMA,
    ValidationResult,
    staleness_of,
    validate_bars,
)
from ffe_dagster.core.data.validation_rules import (
    FRESHNESS_RULE,
    GRID_RULE,
    SCHEMA_RULE,
    SPACING_RULE,
    ValidationConfig,
)

__all__ = [
    "FRESHNESS_RULE",
    "GRID_RULE",
    "OHLCV_SCHEMA",
    "QUARANTINE_SCHEMA",
    "SCHEMA_RULE",
    "SPACING_RULE",
    "TS_DTYPE",
    "Instrument",
    "MarketKind",
    "MarketSchedule",
    "PartitionState",
    "ValidationConfig",
    "ValidationResult",
    "WindowPlan",
    "bars_fingerprint",
    "closed_bars",
    "deduplicate_bars",
    "empty_bars",
    "find_gaps",
    "floor_time",
    "interval_to_timedelta",
    "normalize_bars",
    "resample_bars",
    "rules_key",
    "stale_windows",
    "staleness_of",
    "validate_bars",
]
