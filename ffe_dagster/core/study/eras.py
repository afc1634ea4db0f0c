"""Eras: per instrument, one time order of train/validation era, test era and hold-out.

No bar that any level trains or validates on (nor any level before it in the warm-start chain)
lies in a level's test period or in the promotion hold-out: every level's train/validation
windows, regime segments included, are cut before the instrument's test era; its test period is
drawn from the test era only; the hold-out (the newest ``holdout_days``) is left to COLD.
docs/eras.md explains the design.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from ffe_dagster.core.backtest.strategies import FileSignals
from ffe_dagster.core.regimes.detection import Regime, regime_segments
from ffe_dagster.core.study.level_specs import CurriculumSpec, LevelSpec, Window


@dataclass(frozen=True, slots=True)
class LevelData:
    """What a level reads: bars and regimes per instrument, each instrument's hold-out, and the
    signals a ``file_signals`` curriculum trades (read from its file outside ``core``, by
    ``ffe_dagster.sources.files.curriculum_signals``; None for a built-in strategy)."""

    bars: Mapping[str, pl.DataFrame]
    regimes: Mapping[str, pl.DataFrame]
    periods_per_year: Mapping[str, float]
    holdout_start: Mapping[str, datetime]
    signals: FileSignals | None = None


def _before(moment: datetime) -> datetime:
    return moment - timedelta(microseconds=1)


def level_windows(
    spec: LevelSpec, data: LevelData, curriculum: CurriculumSpec | None = None
) -> list[Window]:
    """The level's train/validation windows: its fixed windows plus the regime segments the
    detector found, both cut at each instrument's test era when ``curriculum`` defines eras (so
    no bar of the test era or the hold-out trains or validates; docs/eras.md)."""
    windows = list(spec.windows)
    era = curriculum.era_start if curriculum else lambda _instrument: None
    if spec.regime_segments is not None:
        regime = Regime(spec.regime_segments)
        for instrument, frame in data.regimes.items():
            start = era(instrument)
            # Segments found on the first era only: a run crossing the boundary ends at it.
            part = frame if start is None else frame.filter(pl.col("ts") < start)
            for first, last in regime_segments(part, regime, min_days=spec.regime_min_days):
                windows.append(Window(instrument, first, last))
    clipped: list[Window] = []
    for w in windows:
        start = era(w.instrument)
        end = w.end if start is None else min(w.end, _before(start))
        if w.start <= end:
            clipped.append(Window(w.instrument, w.start, end))
    return clipped


def test_windows(spec: LevelSpec, data: LevelData, curriculum: CurriculumSpec) -> list[Window]:
    """The level's test period, all in the test era (from its start up to the hold-out): the
    level's ``test_windows``, plus the test era's segments of its regime when it trains on
    regime segments (level 1: BULL); a level with neither tests on every test-era bar of its
    instruments (levels 3 and 4)."""
    out = list(spec.test_windows)
    instruments = sorted({w.instrument for w in spec.windows} | set(data.regimes))
    for instrument in instruments:
        start = curriculum.era_start(instrument)
        holdout = data.holdout_start.get(instrument)
        if start is None or holdout is None or start >= holdout:
            continue
        if spec.regime_segments is None:
            if not spec.test_windows and any(w.instrument == instrument for w in spec.windows):
                out.append(Window(instrument, start, _before(holdout)))
            continue
        frame = data.regimes.get(instrument)
        if frame is None:
            continue
        part = frame.filter(pl.col("ts").is_between(start, holdout, closed="left"))
        regime = Regime(spec.regime_segments)
        for first, last in regime_segments(part, regime, min_days=spec.regime_min_days):
            out.append(Window(instrument, first, last))
    return out
