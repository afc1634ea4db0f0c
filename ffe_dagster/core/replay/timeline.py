"""Replay: the system's own cycles over history, each seeing only the bars before its time.

Pure functions for the replay driver (``ffe_dagster.replay``): the cycle timeline, the cut of
every instrument's bars and regime labels strictly before a cycle's time ``t``, and the
curriculum as it stands at ``t`` (its eras rolled forward so that the test era and the hold-out
are the newest bars before ``t``). The driver then calls the same functions the assets call on
what these return.
"""

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from enum import StrEnum

import polars as pl

from ffe_dagster.core.study.eras import LevelData
from ffe_dagster.core.study.level_specs import CurriculumSpec, LevelSpec, Window
from ffe_dagster.core.study.levels import holdout_starts

_DAY = timedelta(days=1)


class Cadence(StrEnum):
    """How often the replayed system runs a cycle."""

    WEEKLY = "weekly"
    MONTHLY = "monthly"


def cycle_times(start: datetime, end: datetime, every: Cadence) -> tuple[datetime, ...]:
    """The cycle times from ``start`` (included) to ``end`` (excluded).

    Weekly: every 7 days from ``start``. Monthly: ``start`` and then the same day and time of
    each later month (a day past a month's end, e.g. the 31st, is refused: say the 1st).
    Raises ``ValueError`` when ``end`` is not after ``start`` or either has no time zone.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("replay start and end must be timezone-aware (UTC)")
    if end <= start:
        raise ValueError(f"replay end {end:%Y-%m-%d} is not after its start {start:%Y-%m-%d}")
    if every is Cadence.MONTHLY and start.day > 28:
        raise ValueError(f"a monthly replay starts on day 1..28, not {start.day}")
    out: list[datetime] = []
    moment = start
    while moment < end:
        out.append(moment)
        if every is Cadence.WEEKLY:
            moment = moment + timedelta(days=7)
        else:
            month = moment.month % 12 + 1
            moment = moment.replace(year=moment.year + (moment.month == 12), month=month)
    return tuple(out)


def rows_before(frames: Mapping[str, pl.DataFrame], t: datetime) -> dict[str, pl.DataFrame]:
    """Every frame's rows whose ``ts`` lies strictly before ``t``; frames left empty are dropped
    (an instrument with no bar before ``t`` did not exist yet)."""
    out: dict[str, pl.DataFrame] = {}
    for key, frame in frames.items():
        part = frame.filter(pl.col("ts") < t)
        if part.height:
            out[key] = part
    return out


def level_data_before(data: LevelData, t: datetime, holdout_days: int) -> LevelData:
    """What a cycle at ``t`` knows: bars and regime labels strictly before ``t`` and each
    instrument's hold-out recomputed as the newest ``holdout_days`` of those bars
    (``levels.holdout_starts``, as ``load_level_data`` does).

    Regime labels may be cut rather than recomputed because the detector labels each bar with
    the previous complete day (``detection.detect_regimes``);
    ``tests/core/test_replay_timeline.py`` checks that the cut labels equal the labels
    recomputed on the cut bars.
    """
    bars = rows_before(data.bars, t)
    regimes = {k: v for k, v in rows_before(data.regimes, t).items() if k in bars}
    return LevelData(
        bars=bars,
        regimes=regimes,
        periods_per_year={k: v for k, v in data.periods_per_year.items() if k in bars},
        holdout_start=holdout_starts(bars, holdout_days),
        signals=data.signals,
    )


def newest_bar(data: LevelData) -> datetime | None:
    """The newest bar time over every instrument (None without bars)."""
    stamps = [f["ts"].max() for f in data.bars.values() if f.height]
    values = [s for s in stamps if isinstance(s, datetime)]
    return max(values) if values else None


def _clip(window: Window, start: datetime | None, end: datetime) -> Window | None:
    lo = window.start if start is None else max(window.start, start)
    hi = min(window.end, end)
    return Window(window.instrument, lo, hi) if lo <= hi else None


def _roll_level(spec: LevelSpec, old_era: datetime, new_era: datetime, t: datetime) -> LevelSpec:
    before = new_era - timedelta(microseconds=1)
    windows: list[Window] = []
    for w in spec.windows:
        # A window that runs up to the configured test era is "the whole first era" (levels 3
        # and 4): it grows with the era. Fixed trend windows (levels 1 and 2) keep their dates.
        grown = Window(w.instrument, w.start, before) if w.end >= old_era - _DAY else w
        clipped = _clip(grown, None, before)
        if clipped is not None:
            windows.append(clipped)
    last = t - timedelta(microseconds=1)
    tests = [c for w in spec.test_windows if (c := _clip(w, new_era, last)) is not None]
    return replace(spec, windows=tuple(windows), test_windows=tuple(tests))


def curriculum_at(curriculum: CurriculumSpec, t: datetime, *, test_days: int) -> CurriculumSpec:
    """The curriculum of a cycle at ``t``: the eras rolled so that the test era is the
    ``test_days`` before the hold-out, and the hold-out the newest ``holdout_days`` before ``t``.

    Per level: windows that reach the configured test era grow to the new era's start; every
    window is cut before the new era; fixed test windows are cut to ``[new era, t)``. The
    configured curriculum's eras are fixed dates; without rolling, every cycle of a replay
    would train on the same bars (and, with the same seed, choose the same sets). A curriculum
    without eras is returned unchanged.
    """
    if test_days < 1:
        raise ValueError(f"test_days must be at least 1, got {test_days}")
    old = curriculum.era_start("*") or min(curriculum.test_era_start.values(), default=None)
    if old is None:
        return curriculum
    new_era = t - timedelta(days=curriculum.holdout_days + test_days)
    levels = tuple(_roll_level(spec, old, new_era, t) for spec in curriculum.levels)
    return replace(curriculum, levels=levels, test_era_start={"*": new_era})
