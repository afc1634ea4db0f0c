"""Bars from local Parquet or CSV files (the bundled samples, or a user's own exports), and the
signal file of a ``file_signals`` curriculum."""

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl

from ffe_dagster.core.backtest.strategies import FileSignals
from ffe_dagster.core.data.bars import Instrument, normalize_bars
from ffe_dagster.core.study.level_specs import CurriculumSpec
from ffe_dagster.sources.base import FetchStats, Page

TS_UNITS = ("s", "ms", "us", "ns")


@dataclass(frozen=True, slots=True)
class FileSource:
    """Reads one file per instrument from ``directory``.

    ``columns`` renames source columns to the OHLCV names (``{"time": "ts", "Open": "open"}``).
    A ``ts`` column of numbers is read as Unix time in ``ts_unit`` (``s``, ``ms``, ``us``,
    ``ns``); text is parsed as ISO 8601, naive times taken as UTC. ``interval`` is the bar
    interval the files hold.
    """

    directory: Path
    files: Mapping[str, str]
    columns: Mapping[str, str] = field(default_factory=dict)
    interval: str = "1h"
    ts_unit: str | None = None
    name: str = "files"
    resumable: bool = False  # a user may edit a file: every run reads it again

    def path_for(self, instrument: str) -> Path:
        """The file that holds ``instrument``."""
        if instrument not in self.files:
            raise KeyError(f"no file configured for instrument {instrument!r}")
        return self.directory / self.files[instrument]

    def _read(self, path: Path) -> pl.DataFrame:
        try:
            lazy = (
                pl.scan_csv(path, try_parse_dates=True)
                if path.suffix == ".csv"
                else pl.scan_parquet(path)
            )
            frame = lazy.rename(dict(self.columns), strict=False).collect()
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise ValueError(f"cannot read bar file {path}: {exc}") from exc
        if "ts" not in frame.columns:
            return frame  # normalize_bars names every missing column
        ts = frame["ts"]
        if ts.dtype.is_numeric():
            if self.ts_unit not in TS_UNITS:
                raise ValueError(
                    f"{path}: column ts holds numbers; set ts_unit to one of {TS_UNITS} "
                    "to say which Unix time unit they are in"
                )
            return frame.with_columns(
                pl.from_epoch("ts", time_unit=self.ts_unit).dt.replace_time_zone("UTC")  # type: ignore[arg-type]
            )
        if ts.dtype == pl.Utf8:
            return frame.with_columns(pl.col("ts").str.to_datetime(time_zone="UTC"))
        if isinstance(ts.dtype, pl.Datetime) and ts.dtype.time_zone is None:
            return frame.with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
        return frame

    def fetch(self, instrument: str, start: datetime, end: datetime) -> pl.DataFrame:
        """Bars with ``start <= ts < end``, normalized; a clear error names a bad file."""
        path = self.path_for(instrument)
        if not path.exists():
            raise FileNotFoundError(f"bar file for {instrument} not found: {path}")
        frame = self._read(path)
        try:
            bars = normalize_bars(frame)
        except (pl.exceptions.PolarsError, ValueError) as exc:
            # A missing column or a value that is no number (``abc`` as a price) shows only when
            # cast: name the file, since the cast error names just the column.
            raise ValueError(f"bar file {path} does not hold valid bars: {exc}") from exc
        return bars.filter((pl.col("ts") >= start) & (pl.col("ts") < end))

    def fetch_pages(
        self,
        instrument: Instrument,
        start: datetime,
        end: datetime,
        *,
        now: datetime,
        stats: FetchStats,
    ) -> Iterator[Page]:
        """The whole span as one page (a file has no open candle and no request limit)."""
        del now  # a file holds what its author put in it
        stats.pages += 1
        yield Page(bars=self.fetch(instrument.key, start, end), start=start, end=end)


def read_signal_file(path: Path) -> FileSignals:
    """The signals of a Parquet file, checked (``FileSignals.checked``); a clear error names the
    file and what is wrong: missing, unreadable, or holding bad rows."""
    if not path.exists():
        raise FileNotFoundError(f"signal file not found: {path}")
    try:
        frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ValueError(f"cannot read signal file {path}: {exc}") from exc
    return FileSignals.checked(frame, str(path))


def curriculum_signals(curriculum: CurriculumSpec) -> FileSignals | None:
    """The signals a ``file_signals`` curriculum trades (read from its ``strategy_options.path``);
    None for a built-in strategy, whose curriculum reads no file."""
    if curriculum.strategy != "file_signals" or not curriculum.signal_file:
        return None
    return read_signal_file(Path(curriculum.signal_file))
