"""``first_difference``: where a new regime history starts to differ from the stored one."""

from datetime import UTC, datetime, timedelta

import polars as pl

from ffe_dagster.core.data.frame_diff import first_difference

T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _frame(n: int, **columns: list[object]) -> pl.DataFrame:
    data: dict[str, object] = {"ts": [T0 + i * HOUR for i in range(n)]}
    data["x"] = columns.get("x", [float(i) for i in range(n)])
    data["label"] = columns.get("label", ["A"] * n)
    return pl.DataFrame(data)


def test_equal_frames_have_no_difference_nulls_and_nans_included() -> None:
    x = [float("nan"), None, 1.0, 2.0]
    label = [None, "A", "B", "B"]
    assert first_difference(_frame(4, x=x, label=label), _frame(4, x=x, label=label)) is None
    assert first_difference(_frame(0), _frame(0)) is None


def test_a_changed_value_or_label_is_found_at_its_row() -> None:
    stored = _frame(6)
    assert first_difference(stored, _frame(6, x=[0.0, 1.0, 2.0, 3.5, 4.0, 5.0])) == T0 + 3 * HOUR
    assert first_difference(stored, _frame(6, label=["A", "B", "A", "A", "A", "A"])) == T0 + HOUR
    # a null where a number was, and NaN where a number was, are differences
    assert first_difference(stored, _frame(6, x=[0.0, None, 2.0, 3.0, 4.0, 5.0])) == T0 + HOUR
    nan = float("nan")
    assert first_difference(stored, _frame(6, x=[0.0, 1.0, nan, 3.0, 4.0, 5.0])) == T0 + 2 * HOUR


def test_appended_rows_start_at_the_first_new_bar_and_dropped_rows_at_the_first_gone() -> None:
    assert first_difference(_frame(4), _frame(7)) == T0 + 4 * HOUR
    assert first_difference(_frame(7), _frame(4)) == T0 + 4 * HOUR


def test_a_shifted_timestamp_or_an_empty_side_rewrites_from_the_oldest_row() -> None:
    shifted = _frame(4).with_columns(pl.col("ts") + timedelta(minutes=30))
    assert first_difference(_frame(4), shifted) == T0
    assert first_difference(_frame(0), _frame(3)) == T0
    assert first_difference(_frame(3), _frame(0)) == T0
    assert first_difference(_frame(3), _frame(3).drop("label")) == T0
