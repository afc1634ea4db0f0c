"""New bars that reach only the test era and the hold-out keep a level's study side and
recompute its test side: the same result as running the level from scratch on the new bars.

Level 4 (robustness) on the bundled BTC/ETH hourly bars of 2022-2023: 2022 trains and validates,
2023 up to the 30-day hold-out is the test era. "Before" lacks the last 3 days of bars, "after"
has them (the 6-hour cycle's case, with a margin so the test metrics surely move).
"""

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import polars as pl
import pytest
from optuna.storages import BaseStorage

from ffe_dagster.config import load_curriculum
from ffe_dagster.config.settings import PACKAGE_DIR
from ffe_dagster.core.backtest.reference import Direction
from ffe_dagster.core.regimes.detection import RegimeConfig, detect_regimes
from ffe_dagster.core.robustness.walk_forward import walk_forward_windows
from ffe_dagster.core.study.identity import segments_fingerprint, study_identity
from ffe_dagster.core.study.level_records import outcome_result
from ffe_dagster.core.study.level_result import LevelResult
from ffe_dagster.core.study.level_reuse import retestable, study_key
from ffe_dagster.core.study.level_specs import CurriculumSpec, LevelSpec, Window
from ffe_dagster.core.study.levels import (
    LevelData,
    holdout_starts,
    level_segments,
    retest_level,
    run_level,
)
from ffe_dagster.core.study.optimize import StudyConfig
from ffe_dagster.resources.optuna_storage import open_storage

TRIALS = 24
WF_TRIALS = 5
INSTRUMENTS = ("BTC_USDT", "ETH_USDT")
CURRICULUM = replace(
    load_curriculum(PACKAGE_DIR / "config" / "curriculum.yaml"),
    test_era_start={"*": datetime(2023, 1, 1, tzinfo=UTC)},
)
SPEC = LevelSpec(
    level=4,
    asset="retest",
    name="retest",
    direction=Direction.BOTH,
    windows=tuple(
        Window(s, datetime(2022, 1, 1, tzinfo=UTC), datetime(2022, 12, 31, tzinfo=UTC))
        for s in INSTRUMENTS
    ),
    trials={"quick": TRIALS},
    pass_criteria={"min_sharpe": 0.0, "min_deflated_sharpe": 0.95, "max_pbo": 0.5},
    promotes=(),
    robustness=True,
)


def _data(bars: dict[str, pl.DataFrame]) -> LevelData:
    return LevelData(
        bars=bars,
        regimes={s: detect_regimes(b, RegimeConfig()) for s, b in bars.items()},
        periods_per_year={s: 24 * 365.0 for s in bars},
        holdout_start=holdout_starts(bars, CURRICULUM.holdout_days),
    )


def _bars() -> dict[str, pl.DataFrame]:
    return {
        s: pl.read_parquet(PACKAGE_DIR / "data" / "samples" / f"{s}_1h.parquet").filter(
            pl.col("ts").dt.year().is_between(2022, 2023)
        )
        for s in INSTRUMENTS
    }


AFTER = _data(_bars())
BEFORE = _data(
    {
        s: b.filter(pl.col("ts") <= b["ts"].max() - pl.duration(days=3))
        for s, b in AFTER.bars.items()
    }
)


def _name(data: LevelData, curriculum: CurriculumSpec = CURRICULUM) -> str:
    segments = segments_fingerprint(level_segments(SPEC, curriculum, data))
    return f"retest-{study_identity(SPEC, curriculum, segments=segments, signal_file_sha256=None)}"


def _run(data: LevelData, storage: BaseStorage) -> LevelResult:
    outcome = run_level(
        SPEC,
        CURRICULUM,
        data,
        study=StudyConfig(
            _name(data), storage, TRIALS, seed=3, constraints=CURRICULUM.constraints, batch_size=8
        ),
        warm_start=None,
        walk_forward_trials=WF_TRIALS,
        max_tries=1,
        chain_trials=50,
    )
    return outcome_result(outcome)


def _storage(tmp: Path) -> BaseStorage:
    return open_storage(f"journal:///{tmp / 's.journal'}")


@pytest.fixture(scope="module")
def first_storage(tmp_path_factory: pytest.TempPathFactory) -> BaseStorage:
    return _storage(tmp_path_factory.mktemp("first"))


@pytest.fixture(scope="module")
def before(first_storage: BaseStorage) -> LevelResult:
    # What the last cycle stored, as the level asset stores it (with its MLflow run).
    return replace(_run(BEFORE, first_storage), mlflow_run_id="run-before")


@pytest.fixture(scope="module")
def from_scratch(tmp_path_factory: pytest.TempPathFactory) -> LevelResult:
    # The level on the new bars in a storage of its own: nothing reused.
    return _run(AFTER, _storage(tmp_path_factory.mktemp("scratch")))


def _comparable(result: LevelResult) -> dict[str, Any]:
    row = result.to_json()
    for volatile in ("new_trials", "mlflow_run_id", "study_side_from_run"):
        row.pop(volatile, None)
    for t in row["tries"]:
        t.pop("seconds")  # wall time of the study
    return row


def test_the_new_bars_leave_the_study_and_its_key_alone() -> None:
    assert _name(BEFORE) == _name(AFTER)
    assert AFTER.holdout_start["BTC_USDT"] > BEFORE.holdout_start["BTC_USDT"]


def test_a_retest_equals_the_level_run_from_scratch_on_the_new_bars(
    before: LevelResult, from_scratch: LevelResult
) -> None:
    retested = retest_level(SPEC, CURRICULUM, AFTER, before)
    # The test side did change with the new bars (so the comparison below means something) ...
    assert retested.test["sharpe"] != before.test["sharpe"]
    assert retested.analysis["test_segments"] != before.analysis["test_segments"]
    assert retested.analysis["cost_sensitivity"] != before.analysis["cost_sensitivity"]
    # ... and every field equals the level's from scratch, the study side included.
    assert _comparable(retested) == _comparable(from_scratch)
    assert retested.new_trials == 0
    assert retested.study_side_from_run == "run-before"  # where its plots and tables are
    assert retested.reuse_key is None and retested.mlflow_run_id is None


def test_an_appended_bar_resumes_the_study_and_every_walk_forward_sub_study(
    before: LevelResult, first_storage: BaseStorage
) -> None:
    again = _run(AFTER, first_storage)
    assert again.new_trials == 0
    for k in range(1, 5):
        sub = optuna.load_study(study_name=f"{_name(AFTER)}-wf{k}", storage=first_storage)
        assert len(sub.trials) == WF_TRIALS  # resumed: no trial added
    assert again.analysis["walk_forward"] == before.analysis["walk_forward"]
    assert again.analysis["overfitting"] == before.analysis["overfitting"]


def _changed(data: LevelData, instrument: str, at: np.datetime64) -> LevelData:
    bars = dict(data.bars)
    frame = bars[instrument]
    stamp = frame["ts"].dt.replace_time_zone(None).cast(pl.Datetime("us")).to_numpy()
    bars[instrument] = frame.with_columns(
        pl.when(pl.Series(stamp == at))
        .then(pl.col("close") * 1.001)
        .otherwise(pl.col("close"))
        .alias("close")
    )
    return replace(data, bars=bars)


@pytest.mark.parametrize("part", ["train", "test"])
def test_a_changed_bar_inside_a_walk_forward_window_starts_every_study_again(
    before: LevelResult, part: str
) -> None:
    """A walk-forward sub-study is ``<study>-wf<k>``: a changed bar in a window's train or test
    part changes the study's identity, hence every sub-study's name (they run afresh), and the
    study side's key (the stored result is not retested)."""
    (segment,) = [s for s in level_segments(SPEC, CURRICULUM, BEFORE) if s.instrument == "BTC_USDT"]
    window = walk_forward_windows(
        len(segment),
        n_windows=CURRICULUM.robustness.walk_forward_windows,
        train_fraction=CURRICULUM.robustness.walk_forward_train_fraction,
    )[1]
    row = window.train_start + 10 if part == "train" else window.test_start + 10
    changed = _changed(BEFORE, "BTC_USDT", segment.ts[row].astype("datetime64[us]"))
    assert _name(changed) != _name(BEFORE)

    def key(data: LevelData) -> str:
        return study_key(
            SPEC,
            CURRICULUM,
            study_name=_name(data),
            n_trials=TRIALS,
            walk_forward_trials=WF_TRIALS,
            warm_start=None,
            chain_trials=50,
            code_version="test",
        )

    stored = replace(before, study_key=key(BEFORE))
    assert retestable(stored, key(BEFORE), TRIALS)
    assert not retestable(stored, key(changed), TRIALS)


def test_a_skipped_level_has_no_test_side_to_compute(before: LevelResult) -> None:
    with pytest.raises(ValueError, match="skipped level"):
        retest_level(SPEC, CURRICULUM, AFTER, replace(before, skipped=True))
