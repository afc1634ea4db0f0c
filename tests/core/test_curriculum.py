"""Curriculum parsing, windows, splits and pass criteria."""

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from ffe_dagster.config import load_curriculum
from ffe_dagster.core.backtest.reference import Direction
from ffe_dagster.core.study.level_specs import (
    Window,
    build_segments,
    evaluate_pass_criteria,
    merge_windows,
    split_bounds,
)

CURRICULUM = Path(__file__).parents[2] / "ffe_dagster" / "config" / "curriculum.yaml"


def d(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


def test_the_shipped_curriculum_has_the_four_levels_of_the_spec() -> None:
    spec = load_curriculum(CURRICULUM)
    assert [lv.level for lv in spec.levels] == [1, 2, 3, 4]
    assert [lv.direction for lv in spec.levels] == [
        Direction.LONG,
        Direction.SHORT,
        Direction.BOTH,
        Direction.BOTH,
    ]
    assert [lv.trials["full"] for lv in spec.levels] == [100, 100, 150, 200]
    assert spec.levels[0].pass_criteria["min_sharpe"] == 0.8
    ranges = {p.name: (p.low, p.high) for p in spec.parameters}
    assert ranges["stop_loss_pct"] == (0.5, 5.0) and ranges["take_profit_pct"] == (0.5, 10.0)


def test_a_bad_curriculum_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("levels: []\nstrategy: x\n")
    with pytest.raises(ValueError, match=r"c\.yaml"):
        load_curriculum(bad)


def test_overlapping_windows_merge_per_instrument() -> None:
    merged = merge_windows(
        [
            Window("A", d("2020-01-01"), d("2020-02-01")),
            Window("B", d("2020-01-15"), d("2020-03-01")),
            Window("A", d("2020-01-20"), d("2020-03-01")),
            Window("A", d("2020-06-01"), d("2020-07-01")),
        ]
    )
    assert merged == [
        Window("A", d("2020-01-01"), d("2020-03-01")),
        Window("A", d("2020-06-01"), d("2020-07-01")),
        Window("B", d("2020-01-15"), d("2020-03-01")),
    ]


def test_segments_stop_before_the_holdout_and_short_pieces_are_dropped() -> None:
    ts = pl.datetime_range(d("2020-01-01"), d("2020-01-31"), "1h", eager=True)
    bars = pl.DataFrame({"ts": ts}).with_columns(
        open=pl.lit(1.0), high=pl.lit(1.0), low=pl.lit(1.0), close=pl.lit(1.0), volume=pl.lit(1.0)
    )
    segments = build_segments(
        [
            Window("A", d("2020-01-01"), d("2020-12-31")),
            Window("A", d("2020-01-30"), d("2020-12-31")),
        ],
        {"A": bars},
        {"A": 8760.0},
        holdout_start={"A": d("2020-01-21")},
        min_bars=24,
    )
    assert len(segments) == 1
    assert len(segments[0]) == 20 * 24  # Jan 1 00:00 .. Jan 20 23:00


def test_split_is_in_time_order() -> None:
    assert split_bounds(100, 0.6, 0.2) == (60, 80)


def test_pass_criteria() -> None:
    results = evaluate_pass_criteria(
        {"min_sharpe": 1.0, "max_drawdown_pct": 15, "min_total_return_pct": 0.0},
        {"sharpe": 1.2, "max_drawdown_pct": 16.0, "total_return_pct": 0.0},
    )
    assert [(r.name, r.passed) for r in results] == [
        ("min_sharpe", True),
        ("max_drawdown_pct", False),
        ("min_total_return_pct", False),  # a zero return is not positive
    ]
    with pytest.raises(ValueError, match="unknown pass criterion"):
        evaluate_pass_criteria({"min_luck": 1}, {})
