"""A study's identity: a hash of every input that changes a trial's numbers.

Two runs with the same identity share one Optuna study (a crashed or repeated run resumes it);
any change to the bars, the regimes, the search space, the seed, the objectives and constraints,
the sampler, the costs, the split, the eras, the hold-out, the strategy and its options (a signal
file by the hash of its bytes, not its path) or the engine's semantics starts a new one, so a
study never returns trials scored under another configuration.
"""

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np
import polars as pl

from ffe_dagster.core.study.level_specs import CurriculumSpec, LevelSpec
from ffe_dagster.core.study.optimize import DIRECTIONS, OBJECTIVES

# Bump when a change to the engine, the metrics or the evaluator alters any trial's numbers
# (fills, stops, costs, Sharpe annualization, period splits): old studies then stop resuming.
ENGINE_SEMANTICS_VERSION = 2
BAR_COLUMNS = ("ts", "open", "high", "low", "close")


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
    bars: Mapping[str, str],
    regimes: Mapping[str, str],
    signal_file_sha256: str | None,
) -> str:
    """A 12-hex-digit hash of every input of the level's trials.

    ``bars`` and ``regimes`` map each instrument to the fingerprint of its frame
    (``frame_fingerprint``); ``signal_file_sha256`` is the hash of the signal file's bytes when
    the strategy reads one.
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
        "bars": dict(sorted(bars.items())),
        "regimes": dict(sorted(regimes.items())),
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
