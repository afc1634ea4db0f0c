"""The live results the trading system reports back (LIMITED and FULL), read from its folder."""

from pathlib import Path

import polars as pl

from ffe_dagster.core.promotion.performance import combine_live_results, normalize_live_results


def read_live_results(directory: Path) -> pl.DataFrame:
    """Every ``*.parquet`` and ``*.csv`` file in ``directory`` as one checked table (README,
    "Promotion" describes the format). A missing directory means no results yet."""
    if not directory.exists():
        return combine_live_results([])
    frames: list[pl.DataFrame] = []
    for path in sorted(directory.iterdir()):
        if path.suffix == ".parquet":
            frames.append(normalize_live_results(pl.read_parquet(path), str(path)))
        elif path.suffix == ".csv":
            frames.append(normalize_live_results(pl.read_csv(path), str(path)))
    return combine_live_results(frames)
