"""Look-ahead analysis of entry signals (after freqtrade's ``lookahead-analysis``).

The engine fills a signal on bar t at bar t's close (``core/backtest/engine.py``): the signal may
use everything known by that close (bar t's own high, low and close included) and nothing later.

* A strategy (built-in or a user's ``EntryStrategy``) is recomputed on the bars truncated just
  after each of a sample of its entry bars; the truncated signals must equal the full-data signals
  on every bar up to the cut. Any difference means a signal used a later bar: a blocking failure
  that names the strategy, instrument, bar and parameter set.
* A signal file stamps each signal with the open time ``ts`` of the bar it trades (filled at that
  bar's close). Its optional ``known_at`` column says when the producing system knew the signal;
  a signal known after ``ts + bar interval`` (after its own fill) is look-ahead and blocks. Rows
  whose ``ts`` is not the open of a bar of the segment they fall in are counted (the engine never
  trades them). How the chosen set's performance changes when every signal comes one bar later
  is reported: a large drop says the edge depends on acting on the very bar of the signal.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl

from ffe_dagster.core.backtest import engine
from ffe_dagster.core.backtest.metrics import Metrics
from ffe_dagster.core.backtest.reference import INIT_CASH, Segment, engine_row
from ffe_dagster.core.backtest.strategies import EntryStrategy, FileSignals, Signals
from ffe_dagster.core.study.evaluation import LevelEvaluator, Params, Period, trade_params

FILE_STRATEGY = "file_signals"
SAMPLES_PER_SEGMENT = 20


class LookaheadError(ValueError):
    """Signals that use information from after the bar they trade."""


@dataclass(frozen=True, slots=True)
class LookaheadMismatch:
    """A bar whose signal differs once the bars after a cut are removed."""

    strategy: str
    instrument: str
    bar: str  # open time of the first bar whose signal changed
    bar_index: int  # its row in the segment
    cut_index: int  # the last bar kept
    params: Mapping[str, float]
    full_signal: int
    truncated_signal: int

    def describe(self) -> str:
        """One sentence naming the strategy, bar and parameter set."""
        return (
            f"strategy {self.strategy} looks ahead: on {self.instrument} bar {self.bar} "
            f"(row {self.bar_index}) its signal is {self.full_signal} on all bars but "
            f"{self.truncated_signal} on the bars up to row {self.cut_index}, with parameters "
            f"{dict(self.params)}"
        )


@dataclass(frozen=True, slots=True)
class LookaheadReport:
    """Truncation check of one strategy over a level's segments and parameter sets."""

    strategy: str
    parameter_sets: int
    cuts_checked: int
    mismatches: tuple[LookaheadMismatch, ...]

    @property
    def passed(self) -> bool:
        """True when no truncation changed a signal."""
        return not self.mismatches

    def as_dict(self) -> dict[str, Any]:
        """The report as plain values (for the level result and metadata)."""
        return {
            "strategy": self.strategy,
            "passed": self.passed,
            "parameter_sets": self.parameter_sets,
            "cuts_checked": self.cuts_checked,
            "mismatches": [asdict(m) for m in self.mismatches],
        }


def _sample_cuts(signals: Signals, samples: int) -> list[int]:
    # Entry bars, evenly spaced; a segment without entries is still cut at a few bars.
    entries = np.flatnonzero(signals)
    pool = entries if entries.size else np.arange(signals.size)
    if pool.size == 0:
        return []
    picks = np.linspace(0, pool.size - 1, min(samples, pool.size)).round().astype(np.int64)
    return sorted({int(pool[i]) for i in picks})


def check_lookahead(
    strategy: EntryStrategy,
    segments: Sequence[Segment],
    param_sets: Sequence[Params],
    *,
    samples_per_segment: int = SAMPLES_PER_SEGMENT,
) -> LookaheadReport:
    """Recompute ``strategy``'s signals on each segment cut just after each of up to
    ``samples_per_segment`` entry bars, and compare them with the full-data signals on every bar
    up to the cut. One mismatch (the first bar that differs) is kept per parameter set and
    segment."""
    mismatches: list[LookaheadMismatch] = []
    cuts = 0
    for params in param_sets:
        values = {k: float(params[k]) for k in strategy.param_names}
        for segment in segments:
            full = strategy.signals_for(segment, values)
            for cut in _sample_cuts(full, samples_per_segment):
                cuts += 1
                short = strategy.signals_for(segment.slice(0, cut + 1), values)
                differs = np.flatnonzero(short != full[: cut + 1])
                if differs.size:
                    bar = int(differs[0])
                    mismatches.append(
                        LookaheadMismatch(
                            strategy=strategy.name,
                            instrument=segment.instrument,
                            bar=str(segment.ts[bar]),
                            bar_index=bar,
                            cut_index=cut,
                            params=values,
                            full_signal=int(full[bar]),
                            truncated_signal=int(short[bar]),
                        )
                    )
                    break
    return LookaheadReport(strategy.name, len(param_sets), cuts, tuple(mismatches))


@dataclass(frozen=True, slots=True)
class LateSignal:
    """A file signal known after the close of the bar it trades (its fill)."""

    instrument: str
    ts: str
    known_at: str


@dataclass(frozen=True, slots=True)
class SignalFileTiming:
    """When a signal file's signals were known, against the bars they trade."""

    signals: int  # non-zero signals that fall inside the level's segments
    off_bar: int  # of those, stamped at a time that is no bar's open (never traded)
    information_time_given: bool  # the file has a ``known_at`` column
    late: tuple[LateSignal, ...]

    @property
    def passed(self) -> bool:
        """True when no signal was known after its fill."""
        return not self.late

    def as_dict(self) -> dict[str, Any]:
        """The check as plain values."""
        return {
            "passed": self.passed,
            "signals": self.signals,
            "off_bar": self.off_bar,
            "information_time_given": self.information_time_given,
            "late": [asdict(s) for s in self.late[:20]],
            "late_count": len(self.late),
        }


def check_signal_file_timing(
    frame: pl.DataFrame, segments: Sequence[Segment], bar_interval: timedelta
) -> SignalFileTiming:
    """Check a signal file's checked frame (``FileSignals.frame``) against the level's segments.

    A non-zero signal at ``ts`` inside a segment must be stamped at one of its bars' open times
    (else it is counted in ``off_bar``), and, with a ``known_at`` column, be known no later than
    ``ts + bar_interval``: the close of its bar, where the engine fills it.
    """
    has_known = "known_at" in frame.columns
    has_instrument = "instrument" in frame.columns
    active = frame.filter(pl.col("signal") != 0)
    step = np.timedelta64(int(bar_interval / timedelta(microseconds=1)), "us")
    signals = off_bar = 0
    late: list[LateSignal] = []
    for segment in segments:
        rows = active
        if has_instrument:
            rows = rows.filter(pl.col("instrument") == segment.instrument)
        stamps = rows["ts"].dt.replace_time_zone(None).to_numpy().astype("datetime64[us]")
        bars = segment.ts.astype("datetime64[us]")
        inside = (stamps >= bars[0]) & (stamps <= bars[-1])
        signals += int(inside.sum())
        off_bar += int((inside & ~np.isin(stamps, bars)).sum())
        if has_known:
            known = rows["known_at"].dt.replace_time_zone(None).to_numpy()
            known = known.astype("datetime64[us]")
            for i in np.flatnonzero(inside & (known > stamps + step)):
                late.append(LateSignal(segment.instrument, str(stamps[i]), str(known[i])))
    return SignalFileTiming(signals, off_bar, has_known, tuple(late))


@dataclass(frozen=True, slots=True)
class DelayEffect:
    """The chosen set over one period with its signals as given and one bar later."""

    period: str
    original: Metrics
    delayed: Metrics

    def as_dict(self) -> dict[str, Any]:
        """Both metric sets and the change of each (delayed minus original)."""
        a, b = self.original.as_dict(), self.delayed.as_dict()
        # An infinite profit factor on either side has no finite change.
        change = {k: b[k] - a[k] if math.isfinite(a[k] + b[k]) else None for k in a}
        return {"period": self.period, "original": a, "delayed_one_bar": b, "change": change}


def delay_signals(signals: Signals, lengths: Sequence[int]) -> Signals:
    """``signals`` of segments laid back to back, each moved one bar later within its segment
    (a segment's first bar gets no signal; its last signal drops out)."""
    out = np.zeros_like(signals)
    start = 0
    for n in lengths:
        out[start + 1 : start + n] = signals[start : start + n - 1]
        start += n
    return out


def delayed_signal_effect(evaluator: LevelEvaluator, params: Params, period: Period) -> DelayEffect:
    """Metrics of ``params`` over ``period`` with the strategy's signals, and with every signal one
    bar later (same exits, costs and direction)."""
    layout = evaluator.layout(period)
    if layout.bounds.shape[0] == 0:
        raise ValueError(f"no segment has bars in the {period} period")
    segments = evaluator.segments
    original = evaluator.signals(params)
    delayed = delay_signals(original, [len(s) for s in segments])
    offsets = np.cumsum([0, *(len(s) for s in segments)])
    row = engine_row(trade_params(params), evaluator.costs, evaluator.direction)
    no_trades = np.empty((0, engine.N_TRADE_FIELDS), dtype=np.float64)
    no_returns = np.empty(0, dtype=np.float64)
    metrics: list[Metrics] = []
    for signals in (original, delayed):
        stats = engine.new_stats()
        for (lo, hi), i in zip(layout.bounds, layout.segment_index, strict=True):
            s, base = segments[i], int(offsets[i])
            engine.simulate_segment(
                s.open, s.high, s.low, s.close, signals[base : base + len(s)],
                int(lo) - base, int(hi) - base, row, INIT_CASH, stats, no_trades, no_returns,
            )  # fmt: skip
        metrics.append(engine.stats_to_metrics(stats, layout.periods_per_year))
    return DelayEffect(str(period), metrics[0], metrics[1])


def _bar_interval(segments: Sequence[Segment]) -> timedelta:
    steps = [np.diff(s.ts.astype("datetime64[us]")).min() for s in segments if len(s) > 1]
    if not steps:
        raise ValueError("no segment has two bars: the bar interval is unknown")
    return timedelta(microseconds=int(min(steps).astype(np.int64)))


def lookahead_analysis(
    evaluator: LevelEvaluator,
    param_sets: Sequence[Params],
    *,
    signals: FileSignals | None = None,
) -> dict[str, Any]:
    """The level's look-ahead gate over its candidate parameter sets (the chosen one first).

    A strategy is checked by truncation; a signal file (``signals``, the strategy's file) by
    its timing, plus the effect of a one-bar delay on the first set over the test period. Raises
    ``LookaheadError`` naming the strategy (or file), bar and parameter set on a failure; returns
    the report as plain values otherwise.
    """
    if not param_sets:
        return {}
    segments = evaluator.segments
    if evaluator.strategy.name != FILE_STRATEGY or signals is None:
        report = check_lookahead(evaluator.strategy, segments, param_sets)
        if not report.passed:
            raise LookaheadError(
                "; ".join(m.describe() for m in report.mismatches[:3])
                + f" ({len(report.mismatches)} mismatch(es) in {report.cuts_checked} cuts)"
            )
        return {"truncation": report.as_dict()}
    timing = check_signal_file_timing(signals.frame, segments, _bar_interval(segments))
    if not timing.passed:
        first = timing.late[0]
        raise LookaheadError(
            f"signal file looks ahead: {len(timing.late)} signal(s) known after the close of the "
            f"bar they trade, first on {first.instrument} bar {first.ts} known at "
            f"{first.known_at} (parameters {dict(param_sets[0])})"
        )
    out: dict[str, Any] = {"signal_file": timing.as_dict()}
    period = Period.TEST if evaluator.layout(Period.TEST).bounds.shape[0] else Period.ALL
    out["delay_one_bar"] = delayed_signal_effect(evaluator, param_sets[0], period).as_dict()
    return out
