"""The bars a level's study trained, validated and tested on, as named datasets with a content
digest, so a tracking store can show which bars a run saw and tell two runs on different bars
apart."""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from ffe_dagster.core.backtest.reference import Segment
from ffe_dagster.core.study.evaluation import MIN_PERIOD_BARS, Period
from ffe_dagster.core.study.level_specs import split_bounds

CONTEXTS = (Period.TRAIN, Period.VALIDATION, Period.TEST)


@dataclass(frozen=True, slots=True)
class DataWindow:
    """A contiguous run of one instrument's bars: first and last bar-open time (ISO), count."""

    instrument: str
    first: str
    last: str
    bars: int


@dataclass(frozen=True, slots=True)
class StudyDataset:
    """The bars of one period (``train``, ``validation`` or ``test``) over all of a level's
    segments, with the digest of their content."""

    context: str
    windows: tuple[DataWindow, ...]
    digest: str

    @property
    def bars(self) -> int:
        """How many bars the period holds over all its windows."""
        return sum(w.bars for w in self.windows)

    @property
    def instruments(self) -> tuple[str, ...]:
        """The instruments of the period, sorted, each once."""
        return tuple(sorted({w.instrument for w in self.windows}))


def _window(segment: Segment, lo: int, hi: int) -> DataWindow:
    ts = segment.ts[lo:hi]
    return DataWindow(segment.instrument, str(ts[0]), str(ts[-1]), hi - lo)


def _pieces(
    context: Period,
    segments: Sequence[Segment],
    test_segments: Sequence[Segment] | None,
    train_fraction: float,
    validation_fraction: float,
) -> list[tuple[Segment, int, int]]:
    # Each segment's rows of the period, as the level's evaluators cut them.
    if context == Period.TEST and test_segments is not None:
        return [(segment, 0, len(segment)) for segment in test_segments]
    out: list[tuple[Segment, int, int]] = []
    for segment in segments:
        a, b = split_bounds(len(segment), train_fraction, validation_fraction)
        lo, hi = {Period.TRAIN: (0, a), Period.VALIDATION: (a, b)}.get(context, (b, len(segment)))
        out.append((segment, lo, hi))
    return out


def study_datasets(
    segments: Sequence[Segment],
    *,
    train_fraction: float,
    validation_fraction: float,
    test_segments: Sequence[Segment] | None = None,
) -> tuple[StudyDataset, ...]:
    """The train, validation and test datasets of a level's segments, split as the level's
    evaluator splits them (each segment in time order by ``split_bounds``; a period piece shorter
    than ``MIN_PERIOD_BARS`` is not evaluated, so it is not listed either).

    With eras the test period is not a tail of each segment but the level's test-era segments:
    ``test_segments`` then gives them, each used whole.

    The digest is the first 16 hex digits of a SHA-256 over each piece's instrument, bar times
    and OHLC prices: the same bars give the same digest in any run, one changed price another.
    Raises ``ValueError`` for no segments (the evaluator refuses them too).
    """
    if not segments:
        raise ValueError("a level with no bars has no datasets to name")
    out: list[StudyDataset] = []
    for context in CONTEXTS:
        digest = hashlib.sha256()
        windows: list[DataWindow] = []
        for segment, lo, hi in _pieces(
            context, segments, test_segments, train_fraction, validation_fraction
        ):
            if hi - lo < MIN_PERIOD_BARS:
                continue
            windows.append(_window(segment, lo, hi))
            digest.update(segment.instrument.encode())
            for column in (segment.ts, segment.open, segment.high, segment.low, segment.close):
                digest.update(column[lo:hi].tobytes())
        out.append(StudyDataset(str(context), tuple(windows), digest.hexdigest()[:16]))
    return tuple(out)
