"""No bar steers a choice and is also tested: on the bundled curriculum and the bundled bars,
no bar any level trains or validates on (so none of the warm-start chain's either) lies in any
level's test period or in the promotion hold-out; a configuration that would break this is
rejected at load, naming the window."""

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from ffe_dagster.config import ConfigError, load_curriculum
from ffe_dagster.config.settings import PACKAGE_DIR
from ffe_dagster.core.backtest.reference import Segment
from ffe_dagster.core.regimes.detection import RegimeConfig, detect_regimes
from ffe_dagster.core.study.levels import (
    LevelData,
    holdout_starts,
    level_evaluator,
    level_test_evaluator,
)

CURRICULUM_FILE = PACKAGE_DIR / "config" / "curriculum.yaml"
CURRICULUM = load_curriculum(CURRICULUM_FILE)
INSTRUMENTS = ("BTC_USDT", "ETH_USDT", "EUR_USD")


@pytest.fixture(scope="module")
def data() -> LevelData:
    bars = {
        s: pl.read_parquet(PACKAGE_DIR / "data" / "samples" / f"{s}_1h.parquet")
        for s in INSTRUMENTS
    }
    return LevelData(
        bars=bars,
        regimes={s: detect_regimes(b, RegimeConfig()) for s, b in bars.items()},
        periods_per_year={s: 8760.0 for s in bars},
        holdout_start=holdout_starts(bars, CURRICULUM.holdout_days),
    )


def _bar_set(segments: tuple[Segment, ...]) -> set[tuple[str, np.datetime64]]:
    return {(s.instrument, t) for s in segments for t in s.ts}


def test_no_training_bar_of_any_level_is_a_test_or_hold_out_bar(data: LevelData) -> None:
    train = {
        lv.level: _bar_set(level_evaluator(lv, CURRICULUM, data).segments)
        for lv in CURRICULUM.levels
    }
    tests = {}
    for lv in CURRICULUM.levels:
        tester = level_test_evaluator(lv, CURRICULUM, data)
        assert tester is not None, f"level {lv.level} has no test period"
        tests[lv.level] = _bar_set(tester.segments)
    holdout = {
        (k, t)
        for k, frame in data.bars.items()
        for t in frame.filter(pl.col("ts") >= data.holdout_start[k])["ts"]
        .dt.replace_time_zone(None)
        .to_numpy()
    }
    assert len(holdout) > 3 * 24 * 20  # 30 days of three instruments (EUR/USD: weekdays)
    # The warm-start chain: level N starts from every choice of levels 1..N-1, so the bars that
    # steered level N are the union of their training and validation bars with its own.
    steered: set[tuple[str, np.datetime64]] = set()
    for lv in CURRICULUM.levels:
        steered |= train[lv.level]
        for other in CURRICULUM.levels:
            overlap = steered & tests[other.level]
            assert not overlap, f"level {lv.level}'s chain trains on level {other.level}'s test"
        assert not steered & holdout
    for level, bars in tests.items():
        assert not bars & holdout, f"level {level}'s test period reaches the hold-out"


def test_each_level_keeps_enough_bars_in_each_era(data: LevelData) -> None:
    """What the bundled data gives each level (docs/eras.md lists these counts)."""
    era = datetime(2022, 1, 1)
    for lv in CURRICULUM.levels:
        evaluator = level_evaluator(lv, CURRICULUM, data)
        tester = level_test_evaluator(lv, CURRICULUM, data)
        assert tester is not None
        train_bars = sum(len(s) for s in evaluator.segments)
        test_bars = sum(len(s) for s in tester.segments)
        assert train_bars >= 5000 and test_bars >= 5000, (lv.level, train_bars, test_bars)
        assert all(s.ts[-1] < np.datetime64(era) for s in evaluator.segments)
        assert all(s.ts[0] >= np.datetime64(era) for s in tester.segments)
        assert {s.instrument for s in tester.segments} == set(INSTRUMENTS)


def test_level_4s_stress_windows_in_the_test_era_are_luna_and_ftx(data: LevelData) -> None:
    level4 = CURRICULUM.levels[3]
    tester = level_test_evaluator(level4, CURRICULUM, data)
    assert tester is not None
    covered = _bar_set(tester.segments)
    for name, (start, end) in CURRICULUM.stress_periods.items():
        inside = {
            (k, t)
            for k, t in covered
            if np.datetime64(start.replace(tzinfo=None))
            <= t
            <= np.datetime64(end.replace(tzinfo=None))
        }
        assert bool(inside) == (name != "covid_crash_2020"), name


def _write(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load(CURRICULUM_FILE.read_text())
    edit(raw)
    path = tmp_path / "curriculum.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_training_window_in_the_test_era_is_rejected(tmp_path: Path) -> None:
    def edit(raw):
        raw["levels"][3]["windows"][0]["end"] = "2099-12-31"

    with pytest.raises(ConfigError) as caught:
        load_curriculum(_write(tmp_path, edit))
    (problem,) = caught.value.problems
    assert problem.startswith(
        "levels[3].windows[0] (BTC_USDT 2020-01-01..2099-12-31) reaches into the test era "
        "(from 2022-01-01)"
    )


def test_a_test_window_before_the_test_era_is_rejected(tmp_path: Path) -> None:
    def edit(raw):
        raw["levels"][1]["test_windows"][2]["start"] = "2021-10-01"

    with pytest.raises(ConfigError) as caught:
        load_curriculum(_write(tmp_path, edit))
    (problem,) = caught.value.problems
    assert problem.startswith(
        "levels[1].test_windows[2] (EUR_USD 2021-10-01..2023-10-31) starts before the test era"
    )


def test_an_instrument_may_have_its_own_test_era(tmp_path: Path) -> None:
    def edit(raw):
        raw["test_era"]["instruments"] = {"EUR_USD": "2021-06-01"}

    # level 2 trains on EUR/USD from 2021-06-01: now inside EUR/USD's test era
    with pytest.raises(ConfigError, match=r"levels\[1\]\.windows\[4\] \(EUR_USD 2021-06-01"):
        load_curriculum(_write(tmp_path, edit))
    spec = load_curriculum(
        _write(tmp_path, lambda raw: raw["test_era"].update(instruments={"EUR_USD": "2022-02-01"}))
    )
    assert spec.era_start("EUR_USD") == datetime(2022, 2, 1, tzinfo=UTC)
    assert spec.era_start("BTC_USDT") == datetime(2022, 1, 1, tzinfo=UTC)
