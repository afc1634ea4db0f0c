"""Which bar partitions a cycle must ingest again: content fingerprints and the stale rule.

A closed partition (its window ended before ``now``) whose bars, validation rules and preceding
bar are what they were when it last passed validation gives the same ``validated_bars`` again:
re-fetching and re-validating it is pure cost (on the bundled history, Dagster's bookkeeping of
162 partitions plus the Great Expectations suite on each). ``stale_windows`` names the windows
that are not in that state; everything here is pure (frames in, frozen records out).
"""

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from ffe_dagster.core.data.bars import OHLCV_SCHEMA
from ffe_dagster.core.data.validation_rules import ValidationConfig

# Raise when the validation suite's code changes what it accepts or stores: every partition's
# recorded rules key then differs and the next cycle validates the whole history again.
VALIDATION_RULES_VERSION = 1


@dataclass(frozen=True, slots=True)
class PartitionState:
    """What a partition's last passing validation saw: the fingerprint of its raw bars, the
    rules key, the source that delivered them and the window's end."""

    instrument: str
    window_start: datetime
    window_end: datetime
    source: str
    raw_fingerprint: str
    rules_key: str
    rows: int


@dataclass(frozen=True, slots=True)
class WindowPlan:
    """One instrument's decision: the window starts to ingest again and why, per window."""

    instrument: str
    stale: tuple[datetime, ...]
    unchanged: int
    reasons: Mapping[datetime, str]


def bars_fingerprint(bars: pl.DataFrame) -> str:
    """A SHA-256 of the OHLCV content of ``bars`` (sorted by ``ts``), independent of column
    order, extra columns and the library's own hashing (which may change between versions)."""
    frame = bars.select(list(OHLCV_SCHEMA)).cast(OHLCV_SCHEMA).sort("ts")  # pyright: ignore[reportArgumentType]
    digest = hashlib.sha256(str(frame.height).encode())
    digest.update(frame["ts"].dt.epoch("us").to_numpy().tobytes())
    for column in list(OHLCV_SCHEMA)[1:]:
        # Nulls (no volume published) hash as their own marker, not as whatever NaN bits are.
        values = frame[column]
        digest.update(values.is_null().to_numpy().tobytes())
        digest.update(values.fill_null(0.0).to_numpy().tobytes())
    return digest.hexdigest()


def rules_key(config: ValidationConfig, intervals: Sequence[str], bar_interval: str) -> str:
    """What besides the raw bars decides a partition's validated rows: the rules version, the
    thresholds and the intervals derived from the bars."""
    return f"v{VALIDATION_RULES_VERSION}|{config!r}|{','.join(intervals)}|{bar_interval}"


def stale_windows(
    instrument: str,
    windows: Sequence[tuple[datetime, datetime]],
    *,
    fingerprints: Mapping[datetime, str],
    states: Mapping[datetime, PartitionState],
    rules: str,
    now: datetime,
    materialized: Sequence[datetime] | frozenset[datetime],
) -> WindowPlan:
    """The windows of ``instrument`` to ingest again: from the first one that is open (ends
    after ``now``), never passed validation, was last validated on other bars or rules, or has
    no materialization in the Dagster instance, every later window too.

    Later windows follow because validation reads the bar before a window (return outliers,
    the gap at its start): once an earlier window's bars change, a later window's verdict may
    change with it. ``fingerprints`` are of the bars the source holds now per window start.
    """
    reasons: dict[datetime, str] = {}
    for start, end in windows:
        state = states.get(start)
        reason = None
        if end > now:
            reason = "open window (refreshed every cycle)"
        elif start not in materialized:
            reason = "not materialized in this Dagster instance"
        elif state is None:
            reason = "never passed validation"
        elif state.rules_key != rules:
            reason = "validation rules changed"
        elif fingerprints.get(start) != state.raw_fingerprint:
            reason = "bars changed"
        if reason is not None:
            reasons[start] = reason
            break
    if not reasons:
        return WindowPlan(instrument, (), len(windows), {})
    first = next(iter(reasons))
    stale = tuple(s for s, _ in windows if s >= first)
    for start in stale[1:]:
        reasons[start] = "after a window ingested again"
    return WindowPlan(instrument, stale, len(windows) - len(stale), reasons)
