"""Bars from local Parquet or CSV files (the bundled samples, or a user's own exports)."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl

from ffe_dagster.core.bars import normalize_bars


@dataclass(frozen=True, slots=True)
class FileSource:
    """Reads one file per instrument from ``directory``; ``columns`` renames source columns."""

    directory: Path
    files: Mapping[str, str]
    columns: Mapping[str, str] = field(default_factory=dict)

    def path_for(self, instrument: str) -> Path:
        """The file that holds ``instrument``."""
        if instrument not in self.files:
            raise KeyError(f"no file configured for instrument {instrument!r}")
        return self.directory / self.files[instrument]

    def fetch(self, instrument: str, start: datetime, end: datetime) -> pl.DataFrame:
        """Bars with ``start <= ts < end``, normalized; a clear error names a bad file."""
        path = self.path_for(instrument)
        if not path.exists():
            raise FileNotFoundError(f"bar file for {instrument} not found: {path}")
        try:
            lazy = pl.scan_csv(path) if path.suffix == ".csv" else pl.scan_parquet(path)
            frame = lazy.rename(dict(self.columns), strict=False).collect()
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise ValueError(f"cannot read bar file {path}: {exc}") from exc
        bars = normalize_bars(frame)
        return bars.filter((pl.col("ts") >= start) & (pl.col("ts") < end))
