"""The replay loop: every cycle from start to end on the bars before it, resumable.

Each completed cycle's record is stored in ``<folder>/cycles/`` under a key that hashes
everything that produced it (the cycle time, the curriculum as it stands then, the bars before
it and, with a signal file, its signals before it, the promotion limits, the trial profile and
the previous cycle's key), with a copy of the
registry as that cycle left it. A replay restarted with the same inputs takes the stored
records up to the first one whose key differs (or is missing), restores the registry copied
after the last of them, and continues from there.
"""

import hashlib
import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from ffe_dagster.config import Universe
from ffe_dagster.core.data.bars import interval_to_timedelta
from ffe_dagster.core.promotion.config import PromotionConfig
from ffe_dagster.core.regimes.detection import RegimeConfig, detect_regimes
from ffe_dagster.core.replay.equity import Trading
from ffe_dagster.core.replay.timeline import Cadence, curriculum_at, cycle_times, level_data_before
from ffe_dagster.core.study.eras import LevelData
from ffe_dagster.core.study.identity import BAR_COLUMNS, frame_fingerprint
from ffe_dagster.core.study.level_specs import CurriculumSpec
from ffe_dagster.core.study.levels import entry_strategy, holdout_starts
from ffe_dagster.replay.replay_cycle import CycleInputs, replay_cycle
from ffe_dagster.resources.registry import ParameterRegistryResource
from ffe_dagster.resources.studies import OptunaStorageResource
from ffe_dagster.sources.files import FileSource

# Part of every cycle key: a record written in an older layout is recomputed, never misread
# (2: the system's sets per instrument are legs with their capital share).
RECORD_FORMAT = 2


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """One replay: its timeline, how each cycle's eras roll, its trial counts, its folder."""

    start: datetime
    end: datetime
    every: Cadence
    folder: Path
    trial_profile: str = "quick"
    test_days: int = 180  # the test era of each cycle: these days before its hold-out
    # The Optuna journal (default ``<folder>/optuna/studies.journal``). Replays that differ only
    # in the selection rule share one: their studies have the same identity, so the second
    # replay resumes the first one's trials instead of running them again.
    studies: Path | None = None


def bundled_history(universe: Universe, samples_dir: Path) -> LevelData:
    """The universe's whole history from its files (the bundled samples by default), with
    regime labels over it (``detect_regimes``, labels from the previous complete day)."""
    files = FileSource(samples_dir, universe.files, interval=universe.bar_interval)
    start = datetime.combine(universe.history_start, datetime.min.time(), tzinfo=UTC)
    end = datetime(2100, 1, 1, tzinfo=UTC)
    bars = {
        i.key: files.fetch(i.key, start, end)
        for i in universe.instruments
        if i.key in universe.files
    }
    return history_of(bars, universe)


def history_of(bars: dict[str, pl.DataFrame], universe: Universe) -> LevelData:
    """``LevelData`` over whole histories (the hold-out is recomputed at each cycle)."""
    interval = interval_to_timedelta(universe.bar_interval)
    config = RegimeConfig()
    return LevelData(
        bars=bars,
        regimes={k: detect_regimes(v, config) for k, v in bars.items()},
        periods_per_year={i.key: i.bars_per_year(interval) for i in universe.instruments},
        holdout_start=holdout_starts(bars, 0),
    )


def cycle_key(
    previous: str, t: datetime, curriculum: CurriculumSpec, data: LevelData, extra: str
) -> str:
    """The hash of everything that produced a cycle's record (see the module docstring): with a
    signal file, its rows before ``t`` count too (a later row cannot change the cycle, an
    edited earlier one must)."""
    digest = hashlib.sha256()
    for part in (previous, t.isoformat(), repr(curriculum), extra):
        digest.update(part.encode())
        digest.update(b"\x1e")
    for key in sorted(data.bars):
        digest.update(key.encode())
        digest.update(frame_fingerprint(data.bars[key], BAR_COLUMNS).encode())
    if data.signals is not None:
        known = data.signals.frame.filter(pl.col("ts") < t)
        digest.update(frame_fingerprint(known, tuple(known.columns)).encode())
    return digest.hexdigest()[:24]


def _record_path(folder: Path, t: datetime) -> Path:
    return folder / "cycles" / f"{t:%Y%m%dT%H%M}.json"


def run_replay(
    config: ReplayConfig,
    curriculum: CurriculumSpec,
    universe: Universe,
    history: LevelData,
    *,
    promotion: PromotionConfig | None = None,
    on_cycle: Callable[[int, int, dict[str, Any], bool], None] | None = None,
) -> list[dict[str, Any]]:
    """Replay every cycle of ``config`` over ``history`` and return their records in order.

    ``on_cycle(index, total, record, resumed)`` is told about each cycle (for progress output).
    """
    promotion = promotion or PromotionConfig()
    folder = config.folder
    (folder / "cycles").mkdir(parents=True, exist_ok=True)
    registry_file = folder / "registry.db"
    studies = config.studies or folder / "optuna" / "studies.journal"
    studies.parent.mkdir(parents=True, exist_ok=True)
    inputs = CycleInputs(
        registry=ParameterRegistryResource(url=f"sqlite:///{registry_file}"),
        # The level assets' storage: each batch's asks and tells written at once, not one
        # locked, fsynced append per operation.
        storage=OptunaStorageResource(url=f"journal:///{studies}").storage("replay"),
        trial_profile=config.trial_profile,
        promotion=promotion,
        trading=Trading(
            strategy=entry_strategy(curriculum, history.signals),
            costs=curriculum.costs,
            periods_per_year=history.periods_per_year,
        ),
        bar_period=interval_to_timedelta(universe.bar_interval),
        folder=folder,
    )
    extra = (
        f"{RECORD_FORMAT}|{config.every}|{config.test_days}|{config.trial_profile}|{promotion!r}"
    )
    times = cycle_times(config.start, config.end, config.every)
    records: list[dict[str, Any]] = []
    key = "start"
    resuming = True
    for index, t in enumerate(times):
        data = level_data_before(history, t, curriculum.holdout_days)
        at_t = curriculum_at(curriculum, t, test_days=config.test_days)
        key = cycle_key(key, t, at_t, data, extra)
        path = _record_path(folder, t)
        stored = json.loads(path.read_text()) if resuming and path.exists() else None
        if stored is not None and stored.get("key") == key:
            records.append(stored)
            if on_cycle:
                on_cycle(index, len(times), stored, True)
            continue
        if resuming:
            # The registry as the last reused cycle left it (or empty before the first).
            resuming = False
            registry_file.unlink(missing_ok=True)
            if records:
                last = _record_path(folder, _time(records[-1])).with_suffix(".registry.db")
                shutil.copyfile(last, registry_file)
        record = {"key": key, **replay_cycle(inputs, at_t, data, t)}
        shutil.copyfile(registry_file, path.with_suffix(".registry.db"))
        path.write_text(json.dumps(record, indent=1, default=str))
        records.append(record)
        if on_cycle:
            on_cycle(index, len(times), record, False)
    return records


def _time(record: Mapping[str, Any]) -> datetime:
    return datetime.fromisoformat(str(record["t"]))


def period_ends(
    records: Sequence[Mapping[str, Any]], end: datetime
) -> list[tuple[datetime, datetime]]:
    """Each cycle's trading period: from its time to the next cycle's (the last to ``end``)."""
    starts = [_time(r) for r in records]
    return list(zip(starts, [*starts[1:], end], strict=True))
