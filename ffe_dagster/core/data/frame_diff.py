"""Where two time-sorted frames start to differ: the warehouse rewrites only from there."""

from datetime import datetime

import polars as pl


def first_difference(stored: pl.DataFrame, frame: pl.DataFrame) -> datetime | None:
    """The first ts from which ``stored`` and ``frame`` (both sorted by ts) differ in any
    column, None when they are equal. Nulls equal nulls and NaN equals NaN, as stored."""
    if stored.is_empty() and frame.is_empty():
        return None
    if stored.is_empty() or frame.is_empty() or stored.columns != frame.columns:
        return _oldest(stored, frame)  # everything from the oldest row of either is rewritten
    n = min(stored.height, frame.height)
    old = stored.head(n)
    new = frame.head(n).cast(stored.schema)  # pyright: ignore[reportArgumentType]
    differs = pl.Series([False] * n)
    for name, dtype in stored.schema.items():
        a, b = old[name], new[name]
        column = a.ne_missing(b)
        if dtype.is_float():
            column = column & ~(a.is_nan() & b.is_nan()).fill_null(False)
        differs = differs | column
    changed = differs.arg_true()
    if changed.len():
        i = int(changed[0])
        return min(_ts(old, i), _ts(new, i))
    if stored.height == frame.height:
        return None
    return _ts(stored if stored.height > n else frame, n)


def _oldest(stored: pl.DataFrame, frame: pl.DataFrame) -> datetime:
    firsts = [f["ts"].min() for f in (stored, frame) if not f.is_empty()]
    return min(v for v in firsts if isinstance(v, datetime))


def _ts(frame: pl.DataFrame, i: int) -> datetime:
    value = frame["ts"][i]
    assert isinstance(value, datetime)
    return value
