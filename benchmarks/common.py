"""Shared loading for the benchmarks: bundled real bars as curriculum inputs (no Dagster)."""

import os
import platform
from collections.abc import Sequence

import polars as pl

from ffe_dagster.config import load_curriculum, load_universe
from ffe_dagster.config.settings import PACKAGE_DIR
from ffe_dagster.core.data.bars import interval_to_timedelta
from ffe_dagster.core.regimes.detection import RegimeConfig, detect_regimes
from ffe_dagster.core.study.level_specs import CurriculumSpec
from ffe_dagster.core.study.levels import LevelData, holdout_starts

SAMPLES = PACKAGE_DIR / "data" / "samples"
UNIVERSE = PACKAGE_DIR / "config" / "universe.yaml"


def load_bars(symbol: str, interval: str) -> pl.DataFrame:
    """One bundled sample file (real bars; see ffe_dagster/data/samples/README.md)."""
    return pl.read_parquet(SAMPLES / f"{symbol}_{interval}.parquet").drop_nulls(
        ["open", "high", "low", "close"]
    )


def level_data(symbols: Sequence[str], interval: str, holdout_days: int) -> LevelData:
    """Bars, detected regimes and hold-outs of ``symbols``, as the level assets load them."""
    step = interval_to_timedelta(interval)
    # Bars per year from each instrument's market schedule, as in the assets.
    per_year = {i.key: i.bars_per_year(step) for i in load_universe(UNIVERSE).instruments}
    bars = {s: load_bars(s, interval) for s in symbols}
    config = RegimeConfig()
    return LevelData(
        bars=bars,
        regimes={s: detect_regimes(b, config) for s, b in bars.items()},
        periods_per_year={s: per_year[s] for s in symbols},
        holdout_start=holdout_starts(bars, holdout_days),
    )


def curriculum() -> CurriculumSpec:
    """The project's curriculum file."""
    return load_curriculum(PACKAGE_DIR / "config" / "curriculum.yaml")


def machine() -> str:
    """This machine in one line (processor, cores, Python), as the results files state it."""
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
