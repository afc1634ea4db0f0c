"""Coarser bars derived from finer ones: the finest interval is fetched once, the rest resampled.

A coarse bar takes the first open, the highest high, the lowest low, the last close and the summed
volume of the fine bars inside it, and is labelled by its open time. Buckets are aligned to the
Unix epoch in UTC (so 1h bars start on the hour and 1d bars at midnight UTC). A bucket without any
fine bar yields no bar: a gap stays a gap, nothing is forward-filled.
"""

from datetime import datetime

import polars as pl

from ffe_dagster.core.data.bars import OHLCV_SCHEMA, interval_to_timedelta


def check_resample_interval(interval: str, source_interval: str) -> None:
    """Raise ``ValueError`` unless ``interval`` is a whole multiple of ``source_interval``."""
    target = interval_to_timedelta(interval)
    source = interval_to_timedelta(source_interval)
    if target < source or target % source:
        raise ValueError(
            f"cannot derive {interval} bars from {source_interval} bars: the target interval "
            "must be a whole multiple of the fetched one"
        )


def resample_bars(
    bars: pl.DataFrame,
    interval: str,
    *,
    source_interval: str,
    complete_before: datetime | None = None,
) -> pl.DataFrame:
    """``bars`` (sorted, unique ``ts``, interval ``source_interval``) resampled to ``interval``.

    With ``complete_before``, a bucket that ends after it is left out: its fine bars are not all
    in yet, and a coarse bar built from part of them would be stored with values that change
    (the still-open candle, one level up). Volume is null when any fine bar has no volume, so a
    feed without volume never shows a made-up zero.
    """
    check_resample_interval(interval, source_interval)
    target = interval_to_timedelta(interval)
    if target == interval_to_timedelta(source_interval):
        out = bars.select(*OHLCV_SCHEMA)
    else:
        out = (
            bars.sort("ts")
            .group_by_dynamic("ts", every=target, closed="left", label="left", start_by="window")
            .agg(
                pl.col("open").first(),
                pl.col("high").max(),
                pl.col("low").min(),
                pl.col("close").last(),
                pl.when(pl.col("volume").null_count() == 0).then(pl.col("volume").sum()),
            )
            .cast(pl.Schema(OHLCV_SCHEMA))  # pyright: ignore[reportArgumentType]
        )
    if complete_before is not None:
        out = out.filter(pl.col("ts") + target <= complete_before)
    return out
