"""A study's identity: a hash of every input that changes a trial's numbers.

Two runs with the same identity share one Optuna study (a crashed or repeated run resumes it);
any change to the bars its trials read (the level's train/validation segments, which the regimes
and the windows choose), the search space, the seed, the objectives and constraints, the sampler,
the costs, the split, the eras, the hold-out, the strategy and its options (a signal file by the
hash of its bytes, not its path) or the engine's semantics starts a new one, so a study never
returns trials scored under another configuration.

Bars no trial reads (the test era, the hold-out, a new bar after them) leave the identity alone:
a cycle with new bars resumes the study's trials and keeps the level's study side (choice,
robustness, walk-forward: ``level_reuse.study_key``), and the level's test side, which does read
them, is computed again (``level_reuse.reuse_key`` hashes every bar; ``levels.retest_level``).
"""

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import polars as pl

from ffe_dagster.core.backtest.reference import Segment
from ffe_dagster.core.study.level_specs import CurriculumSpec, LevelSpec
from ffe_dagster.core.study.optimize import DIRECTIONS, OBJECTIVES

# Bump when a change to the engine, the metrics or the evaluator alters any trial's numbers
# (fills, stops, costs, Sharpe annualization, period splits): old studies then stop resuming.
ENGINE_SEMANTICS_VERSION = 2
BAR_COLUMNS = ("ts", "open", "high", "low", "close")
REGIME_COLUMNS = ("ts", "regime")


def frame_fingerprint(frame: pl.DataFrame, columns: tuple[str, ...]) -> str:
    """SHA-256 of the values of ``columns`` (timestamps as int64 microseconds, numbers as
    float64, text as UTF-8), in row order."""
    digest = hashlib.sha256()
    for name in columns:
        column = frame[name]
        if column.dtype == pl.Utf8 or column.dtype == pl.Categorical:
            digest.update("\x1f".join(str(v) for v in column.to_list()).encode())
        elif column.dtype.is_temporal():
            digest.update(column.dt.cast_time_unit("us").to_physical().to_numpy().tobytes())
        else:
            digest.update(column.cast(pl.Float64).to_numpy().astype(np.float64).tobytes())
        digest.update(b"\x1e")
    return digest.hexdigest()


def segments_fingerprint(segments: Sequence[Segment]) -> str:
    """SHA-256 of what a study's trials read: each segment's instrument, bar times, open, high,
    low and close, and annualization, in the evaluator's order."""
    digest = hashlib.sha256()
    for s in segments:
        digest.update(f"{s.instrument}\x1f{s.periods_per_year!r}\x1f".encode())
        digest.update(s.ts.astype("datetime64[us]").astype(np.int64).tobytes())
        for values in (s.open, s.high, s.low, s.close):
            digest.update(np.ascontiguousarray(values, dtype=np.float64).tobytes())
        digest.update(b"\x1e")
    return digest.hexdigest()


def level_data_fingerprint(
    bars: Mapping[str, pl.DataFrame], regimes: Mapping[str, pl.DataFrame]
) -> str:
    """SHA-256 of every bar and regime label of every instrument: what a level's result reads
    besides its study (the test era and the hold-out's start included)."""
    digest = hashlib.sha256()
    kinds = (("bars", bars, BAR_COLUMNS), ("regimes", regimes, REGIME_COLUMNS))
    for name, frames, columns in kinds:
        for instrument in sorted(frames):
            digest.update(f"{name}\x1f{instrument}\x1f".encode())
            digest.update(frame_fingerprint(frames[instrument], columns).encode())
    return digest.hexdigest()


def bytes_fingerprint(content: bytes) -> str:
    """SHA-256 of a file's bytes (a signal file is known by its content, not its path)."""
    return hashlib.sha256(content).hexdigest()


def _level_inputs(spec: LevelSpec) -> dict[str, Any]:
    # What selects a level's bars; its trial count, pass criteria and regimes do not change a
    # trial's numbers (more trials resume the same study).
    return {
        "level": spec.level,
        "direction": spec.direction.value,
        "windows": [[w.instrument, w.start.isoformat(), w.end.isoformat()] for w in spec.windows],
        "regime_segments": spec.regime_segments,
        "regime_min_days": spec.regime_min_days,
    }


def study_identity(
    spec: LevelSpec,
    curriculum: CurriculumSpec,
    *,
    segments: str,
    signal_file_sha256: str | None,
) -> str:
    """A 12-hex-digit hash of every input of the level's trials.

    ``segments`` is the ``segments_fingerprint`` of the level's train/validation evaluator (the
    only bars a trial scores on); ``signal_file_sha256`` is the hash of the signal file's bytes
    when the strategy reads one.
    """
    payload = {
        "engine": ENGINE_SEMANTICS_VERSION,
        "level": _level_inputs(spec),
        "space": [asdict(p) for p in curriculum.parameters],
        "seed": curriculum.seed,
        "objectives": list(zip(OBJECTIVES, DIRECTIONS, strict=True)),
        "constraints": asdict(curriculum.constraints),
        "sampler": [curriculum.optimizer.sampler, curriculum.optimizer.batch_size],
        "costs": asdict(curriculum.costs),
        "split": [curriculum.train_fraction, curriculum.validation_fraction],
        "holdout_days": curriculum.holdout_days,
        "min_segment_bars": curriculum.min_segment_bars,
        "eras": {k: v.isoformat() for k, v in sorted(curriculum.test_era_start.items())},
        "strategy": curriculum.strategy,
        "strategy_options": {k: v for k, v in curriculum.strategy_options.items() if k != "path"},
        "signal_file": signal_file_sha256,
        "segments": segments,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
