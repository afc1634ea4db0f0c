"""A study's identity changes with every input that changes a trial's numbers and with nothing
else: one test per input (a change gives a new study name), and identical inputs resume."""

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from ffe_dagster.assets.curriculum import study_fingerprint
from ffe_dagster.config import load_curriculum
from ffe_dagster.config.settings import PACKAGE_DIR
from ffe_dagster.core.backtest.metrics import Metrics
from ffe_dagster.core.backtest.reference import CostModel
from ffe_dagster.core.regimes.detection import RegimeConfig, detect_regimes
from ffe_dagster.core.study.identity import (
    ENGINE_SEMANTICS_VERSION,
    level_data_fingerprint,
    study_identity,
)
from ffe_dagster.core.study.level_specs import Constraints, CurriculumSpec, ParamRange, Window
from ffe_dagster.core.study.levels import LevelData, holdout_starts, level_evaluator
from ffe_dagster.core.study.optimize import StudyConfig, run_study
from ffe_dagster.resources.optuna_storage import open_storage

CURRICULUM = load_curriculum(PACKAGE_DIR / "config" / "curriculum.yaml")
SPEC = CURRICULUM.levels[0]


def _bars() -> dict[str, pl.DataFrame]:
    frame = pl.read_parquet(PACKAGE_DIR / "data" / "samples" / "BTC_USDT_1h.parquet")
    return {"BTC_USDT": frame.filter(pl.col("ts").dt.year() == 2021).head(2000)}


BARS = _bars()


def _data(bars: dict[str, pl.DataFrame] = BARS) -> LevelData:
    return LevelData(
        bars=bars,
        regimes={k: detect_regimes(v, RegimeConfig()) for k, v in bars.items()},
        periods_per_year={k: 8760.0 for k in bars},
        holdout_start=holdout_starts(bars, 30),
    )


DATA = _data()
BASE = study_fingerprint(SPEC, CURRICULUM, DATA)


def _signal_file(path: Path, values: list[int]) -> str:
    ts = BARS["BTC_USDT"]["ts"].head(len(values))
    pl.DataFrame({"ts": ts, "signal": values}).write_parquet(path)
    return str(path)


def _space(spec: CurriculumSpec) -> CurriculumSpec:
    first = spec.parameters[0]
    return replace(spec, parameters=(replace(first, high=first.high + 1), *spec.parameters[1:]))


CHANGES: dict[str, Callable[[CurriculumSpec], CurriculumSpec]] = {
    "search space": _space,
    "seed": lambda c: replace(c, seed=c.seed + 1),
    "constraints": lambda c: replace(c, constraints=replace(c.constraints, min_trades=21)),
    "sampler": lambda c: replace(c, optimizer=replace(c.optimizer, sampler="nsga2")),
    "batch size": lambda c: replace(c, optimizer=replace(c.optimizer, batch_size=8)),
    "fee": lambda c: replace(c, costs=CostModel(fee_pct=0.3, slippage_pct=0.0)),
    "slippage": lambda c: replace(c, costs=CostModel(fee_pct=0.1, slippage_pct=0.05)),
    "train split": lambda c: replace(c, train_fraction=0.3),
    "validation split": lambda c: replace(c, validation_fraction=0.3),
    "hold-out": lambda c: replace(c, holdout_days=90),
    "min segment bars": lambda c: replace(c, min_segment_bars=300),
    "test era": lambda c: replace(c, test_era_start={"*": datetime(2021, 6, 1, tzinfo=UTC)}),
    "strategy": lambda c: replace(c, strategy="donchian_breakout"),
    "strategy options": lambda c: replace(c, strategy_options={"delay_bars": 1}),
}


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_each_curriculum_input_starts_a_new_study(name: str) -> None:
    assert study_fingerprint(SPEC, CHANGES[name](CURRICULUM), DATA) != BASE


def test_identical_inputs_give_the_same_name() -> None:
    again = load_curriculum(PACKAGE_DIR / "config" / "curriculum.yaml")
    assert study_fingerprint(again.levels[0], again, _data(_bars())) == BASE


def test_what_does_not_change_a_trial_keeps_the_study() -> None:
    # more trials (a repeat, or the full profile) and other pass criteria resume the study
    spec = replace(SPEC, trials={"quick": 99, "full": 999}, pass_criteria={"min_sharpe": 2.0})
    patience = replace(CURRICULUM, optimizer=replace(CURRICULUM.optimizer, patience=5))
    assert study_fingerprint(spec, patience, DATA) == BASE


def test_the_level_windows_direction_and_regime_change_the_study() -> None:
    window = Window("BTC_USDT", datetime(2020, 1, 2, tzinfo=UTC), SPEC.windows[0].end)
    for spec in (
        replace(SPEC, windows=(window, *SPEC.windows[1:])),
        replace(SPEC, regime_min_days=21),
        replace(SPEC, regime_segments=None),
        replace(SPEC, level=7),
    ):
        assert study_fingerprint(spec, CURRICULUM, DATA) != BASE


def _with_close_changed(frame: pl.DataFrame, at: datetime) -> pl.DataFrame:
    return frame.with_columns(
        pl.when(pl.col("ts") == at).then(pl.col("close") + 0.01).otherwise(pl.col("close"))
    )


def test_one_changed_close_a_trial_reads_starts_a_new_study() -> None:
    segment = level_evaluator(SPEC, CURRICULUM, DATA).segments[0]
    at = segment.ts[len(segment) // 2].astype(datetime).replace(tzinfo=UTC)
    changed = _with_close_changed(BARS["BTC_USDT"], at)
    assert changed["close"].to_list() != BARS["BTC_USDT"]["close"].to_list()
    assert study_fingerprint(SPEC, CURRICULUM, _data({"BTC_USDT": changed})) != BASE


def test_bars_no_trial_reads_keep_the_study_and_change_the_level_result() -> None:
    # With the test era inside these bars, a changed close there and new bars after it touch no
    # train/validation segment: the study resumes, the level's result (its reuse key's data) not.
    era = datetime(2021, 2, 1, tzinfo=UTC)  # the hold-out (the last 30 days) starts after it
    curriculum = replace(CURRICULUM, test_era_start={"*": era})
    frame = BARS["BTC_USDT"]
    last = frame["ts"].max()
    assert isinstance(last, datetime) and last > era
    later = frame.filter(pl.col("ts") < last)  # the same bars, the newest one not in yet
    test_era_change = _with_close_changed(frame, last)
    base = study_fingerprint(SPEC, curriculum, _data({"BTC_USDT": later}))
    for bars in (frame, test_era_change):
        data = _data({"BTC_USDT": bars})
        assert study_fingerprint(SPEC, curriculum, data) == base
        assert level_data_fingerprint(data.bars, data.regimes) != level_data_fingerprint(
            {"BTC_USDT": later}, _data({"BTC_USDT": later}).regimes
        )
    # while a change before the era does start a new study (the check can fail)
    first = level_evaluator(SPEC, curriculum, _data({"BTC_USDT": later})).segments[0]
    inside = first.ts[len(first) // 2].astype(datetime).replace(tzinfo=UTC)
    changed = _data({"BTC_USDT": _with_close_changed(later, inside)})
    assert study_fingerprint(SPEC, curriculum, changed) != base


def test_the_signal_file_counts_by_content_not_by_path(tmp_path: Path) -> None:
    files = replace(CURRICULUM, strategy="file_signals", parameters=CURRICULUM.parameters[:5])
    a = replace(files, signal_file=_signal_file(tmp_path / "a.parquet", [1, 0, -1, 0]))
    same = replace(files, signal_file=_signal_file(tmp_path / "b.parquet", [1, 0, -1, 0]))
    other = replace(files, signal_file=_signal_file(tmp_path / "c.parquet", [1, 0, 1, 0]))
    assert study_fingerprint(SPEC, a, DATA) == study_fingerprint(SPEC, same, DATA)
    assert study_fingerprint(SPEC, a, DATA) != study_fingerprint(SPEC, other, DATA)
    # rewriting the file in place starts a new study too
    _signal_file(Path(str(a.signal_file)), [0, 0, 0, 1])
    assert study_fingerprint(SPEC, a, DATA) != study_fingerprint(SPEC, same, DATA)


def test_the_engine_semantics_version_is_part_of_the_identity() -> None:
    args = {"segments": "1", "signal_file_sha256": None}
    now = study_identity(SPEC, CURRICULUM, **args)
    import ffe_dagster.core.study.identity as module

    original = module.ENGINE_SEMANTICS_VERSION
    try:
        module.ENGINE_SEMANTICS_VERSION = original + 1
        assert study_identity(SPEC, CURRICULUM, **args) != now
    finally:
        module.ENGINE_SEMANTICS_VERSION = original
    assert ENGINE_SEMANTICS_VERSION == original


def test_identical_inputs_resume_the_stored_study(tmp_path: Path) -> None:
    """The same name finds the trials already stored; a changed fee gets a fresh study."""
    storage = open_storage(f"journal:///{tmp_path / 's.journal'}")
    space = (ParamRange("x", 0.0, 1.0),)
    constraints = Constraints(min_trades=0, max_drawdown_pct=100.0, min_win_rate_pct=0.0)

    def objective(batch):
        return [Metrics(p["x"], p["x"], 1.0, 50.0, 1.5, 1.0, 30, 5.0, 10.0) for p in batch]

    def study(curriculum: CurriculumSpec, n: int):
        name = f"level-{study_fingerprint(SPEC, curriculum, DATA)}"
        config = StudyConfig(name, storage, n, seed=1, constraints=constraints, batch_size=2)
        return run_study(objective, space, config)

    assert study(CURRICULUM, 4).resumed_trials == 0
    assert study(CURRICULUM, 6).resumed_trials == 4  # same inputs: resumed
    assert study(CHANGES["fee"](CURRICULUM), 4).resumed_trials == 0  # new inputs: new study
