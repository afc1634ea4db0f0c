"""Curriculum levels as data: the frozen specs, data windows, time splits and pass criteria
(``ffe_dagster.config.curriculum_file`` parses ``curriculum.yaml`` into them).

A level's data is a set of windows per instrument (fixed dates plus regime segments found by the
detector). Overlapping windows are merged so no bar counts twice; each merged window becomes one
``Segment`` that is split in time order into train / validation / test.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from ffe_dagster.core.backtest.reference import CostModel, Direction, Segment


@dataclass(frozen=True, slots=True)
class Window:
    """Bars of one instrument between two UTC instants (both inclusive)."""

    instrument: str
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class ParamRange:
    """One searchable parameter: a float or int range, or a list of choices."""

    name: str
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    choices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Constraints:
    """What makes a trial infeasible rather than merely bad."""

    min_trades: int
    max_drawdown_pct: float
    min_win_rate_pct: float


@dataclass(frozen=True, slots=True)
class OptimizerSpec:
    """How studies run: sampler, batch size, early stop and time limit."""

    sampler: str = "tpe"
    batch_size: int = 16
    patience: int | None = None  # trials without a better Pareto front before stopping early
    timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class ProgressionSpec:
    """When a level advances, repeats with more trials, or lets the next level be skipped
    (docs/spec.md, Progression); judged on the chosen trial's validation metrics."""

    advance_min_win_rate_pct: float = 50.0
    repeat_below_win_rate_pct: float = 45.0
    max_param_shift: float = 0.5  # largest relative change from the previous level's choice
    skip_min_win_rate_pct: float = 60.0
    skip_min_sharpe: float = 1.5
    repeat_trial_factor: float = 1.5
    max_tries: int = 3


@dataclass(frozen=True, slots=True)
class RobustnessSpec:
    """Level-4 robustness: walk-forward, over-fitting statistics and cost sensitivity."""

    walk_forward_windows: int = 4
    walk_forward_train_fraction: float = 0.75
    walk_forward_trials: Mapping[str, int] = field(default_factory=lambda: {"full": 48, "quick": 8})
    pbo_blocks: int = 16
    pbo_max_trials: int = 64
    fee_multipliers: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)
    slippage_pct: tuple[float, ...] = (0.0, 0.05, 0.1)


@dataclass(frozen=True, slots=True)
class LevelSpec:
    """One level of the curriculum (docs/spec.md §4)."""

    level: int
    asset: str
    name: str
    direction: Direction
    windows: tuple[Window, ...]
    trials: Mapping[str, int]
    pass_criteria: Mapping[str, float]
    promotes: tuple[str, ...]
    regime_segments: str | None = None
    regime_min_days: int = 14
    robustness: bool = False
    # Off by default: a level that did not pass sends no candidate to COLD. A user may relax
    # that per level (``promote_without_pass: true``); the COLD decision then says so.
    promote_without_pass: bool = False
    # Fixed windows of the test period; they lie in the test era (``windows`` before it).
    test_windows: tuple[Window, ...] = ()


@dataclass(frozen=True, slots=True)
class CurriculumSpec:
    """The whole curriculum file, parsed and checked."""

    strategy: str
    costs: CostModel
    train_fraction: float
    validation_fraction: float
    holdout_days: int
    min_segment_bars: int
    seed: int
    constraints: Constraints
    parameters: tuple[ParamRange, ...]
    stress_periods: Mapping[str, tuple[datetime, datetime]]
    levels: tuple[LevelSpec, ...] = field(default=())
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    progression: ProgressionSpec = field(default_factory=ProgressionSpec)
    robustness: RobustnessSpec = field(default_factory=RobustnessSpec)
    signal_file: str | None = None
    strategy_options: Mapping[str, Any] = field(default_factory=dict)
    # Where each instrument's test era starts ("*": every instrument without its own date).
    # Bars before it are the train/validation era, bars from it to the hold-out the test era
    # (docs/eras.md). Empty: no eras (only for code that builds a spec by hand).
    test_era_start: Mapping[str, datetime] = field(default_factory=dict)
    # How a level picks its validation candidate among the study's Pareto front (SELECTION_RULES):
    # "best" the top validation Sharpe, "plateau" the set whose neighbourhood (each numeric
    # parameter moved by ``plateau_fraction`` of its range) keeps the best mean validation Sharpe.
    # It changes the choice after the study, not the trials: not part of the study identity.
    selection: str = "best"
    plateau_fraction: float = 0.05

    def era_start(self, instrument: str) -> datetime | None:
        """The first instant of ``instrument``'s test era, or None without eras."""
        return self.test_era_start.get(instrument, self.test_era_start.get("*"))


SELECTION_RULES = ("best", "plateau")


def merge_windows(windows: Sequence[Window]) -> list[Window]:
    """Union of windows per instrument: overlapping or touching windows become one."""
    merged: list[Window] = []
    for w in sorted(windows, key=lambda w: (w.instrument, w.start)):
        last = merged[-1] if merged else None
        if last and last.instrument == w.instrument and w.start <= last.end + timedelta(hours=1):
            merged[-1] = Window(w.instrument, last.start, max(last.end, w.end))
        else:
            merged.append(w)
    return merged


def bars_to_segment(bars: pl.DataFrame, instrument: str, periods_per_year: float) -> Segment:
    """Wrap OHLCV bars (sorted by ts) as a ``Segment`` of numpy arrays."""
    return Segment(
        instrument=instrument,
        ts=bars["ts"].to_numpy(),
        open=bars["open"].to_numpy().astype(np.float64),
        high=bars["high"].to_numpy().astype(np.float64),
        low=bars["low"].to_numpy().astype(np.float64),
        close=bars["close"].to_numpy().astype(np.float64),
        periods_per_year=periods_per_year,
    )


def build_segments(
    windows: Sequence[Window],
    bars: Mapping[str, pl.DataFrame],
    periods_per_year: Mapping[str, float],
    *,
    holdout_start: Mapping[str, datetime],
    min_bars: int,
) -> list[Segment]:
    """Cut the level's windows out of each instrument's bars, before its hold-out.

    Windows of instruments without bars, and pieces shorter than ``min_bars``, are left out.
    """
    segments: list[Segment] = []
    for w in merge_windows(windows):
        frame = bars.get(w.instrument)
        if frame is None:
            continue
        end = min(w.end, holdout_start[w.instrument] - timedelta(microseconds=1))
        piece = frame.filter(pl.col("ts").is_between(w.start, end))
        if piece.height >= min_bars:
            segments.append(bars_to_segment(piece, w.instrument, periods_per_year[w.instrument]))
    return segments


def split_bounds(n_bars: int, train: float, validation: float) -> tuple[int, int]:
    """Indices ``(a, b)`` so that train is ``[0, a)``, validation ``[a, b)``, test ``[b, n)``."""
    a = int(n_bars * train)
    b = int(n_bars * (train + validation))
    return a, b


@dataclass(frozen=True, slots=True)
class CriterionResult:
    """One pass criterion of a level, with the measured value."""

    name: str
    threshold: float
    value: float
    passed: bool
    note: str = ""  # why it could not be measured ("not evaluated: ..."); it then fails


_CRITERIA: Mapping[str, tuple[str, bool]] = {
    # criterion -> (metric, True when the metric must be at least the threshold)
    "min_win_rate_pct": ("win_rate_pct", True),
    "min_sharpe": ("sharpe", True),
    "max_drawdown_pct": ("max_drawdown_pct", False),
    "min_profit_factor": ("profit_factor", True),
    "min_total_return_pct": ("total_return_pct", True),
    "stress_min_total_return_pct": ("stress_worst_total_return_pct", True),
    "min_deflated_sharpe": ("deflated_sharpe", True),
    "max_pbo": ("pbo", False),
    "min_walk_forward_efficiency": ("walk_forward_efficiency", True),
}
PASS_CRITERIA = frozenset(_CRITERIA)  # the criterion names a level's ``pass`` may use
_LABELS: Mapping[str, str] = {
    "min_win_rate_pct": "win rate",
    "min_sharpe": "Sharpe",
    "max_drawdown_pct": "max drawdown",
    "min_profit_factor": "profit factor",
    "min_total_return_pct": "total return",
    "stress_min_total_return_pct": "worst stress-window return",
    "min_deflated_sharpe": "deflated Sharpe",
    "max_pbo": "PBO",
    "min_walk_forward_efficiency": "walk-forward efficiency",
}


def describe_failure(criterion: CriterionResult) -> str:
    """One failed criterion in words: ``deflated Sharpe 0.41 < 0.95``."""
    label = _LABELS.get(criterion.name, criterion.name)
    if criterion.note:
        return f"{label} {criterion.note}"
    unit = "%" if criterion.name.endswith("_pct") else ""
    at_least = _CRITERIA[criterion.name][1] if criterion.name in _CRITERIA else True
    op = "<=" if criterion.name == "min_total_return_pct" else "<" if at_least else ">"
    return f"{label} {criterion.value:.2f}{unit} {op} {criterion.threshold:g}{unit}"


def level_verdict(level: int, chosen: bool, criteria: Sequence[CriterionResult]) -> str | None:
    """Why ``level`` did not pass (``level 4 did not pass: deflated Sharpe 0.41 < 0.95; PBO
    0.62 > 0.5``), or None when it passed."""
    if not chosen:
        return f"level {level} did not pass: no parameter set was chosen"
    failed = [describe_failure(c) for c in criteria if not c.passed]
    return f"level {level} did not pass: " + "; ".join(failed) if failed else None


def evaluate_pass_criteria(
    criteria: Mapping[str, float],
    metrics: Mapping[str, float],
    unmeasured: Mapping[str, str] | None = None,
) -> list[CriterionResult]:
    """Check a level's pass criteria against measured metrics (unknown names are an error).

    A criterion whose metric is missing was not evaluated: it fails with the reason
    ``unmeasured`` gives for the metric (never passes on a default value)."""
    results: list[CriterionResult] = []
    for name, threshold in criteria.items():
        if name not in _CRITERIA:
            raise ValueError(f"unknown pass criterion {name!r}; known: {sorted(_CRITERIA)}")
        metric, at_least = _CRITERIA[name]
        if metric not in metrics:
            # A metric the level could not measure (no out-of-sample stress bars, say) fails
            # its criterion visibly rather than passing on a default.
            why = (unmeasured or {}).get(metric, f"{metric} was not measured")
            results.append(
                CriterionResult(name, threshold, float("nan"), False, f"not evaluated ({why})")
            )
            continue
        value = float(metrics[metric])
        # A positive-return criterion at 0 means strictly positive.
        if at_least:
            ok = value > threshold if name == "min_total_return_pct" else value >= threshold
        else:
            ok = value <= threshold
        results.append(CriterionResult(name, threshold, value, ok))
    return results
