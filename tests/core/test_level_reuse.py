"""The level reuse keys change with every input of a level's result (``reuse_key``) or of its
study side (``study_key``) besides its trials."""

from dataclasses import replace

from ffe_dagster.config import load_curriculum
from ffe_dagster.config.settings import PACKAGE_DIR
from ffe_dagster.core.study.level_result import LevelResult
from ffe_dagster.core.study.level_reuse import (
    REUSE_KEY,
    STUDY_KEY,
    retestable,
    reusable,
    reuse_key,
    study_key,
)

CURRICULUM = load_curriculum(PACKAGE_DIR / "config" / "curriculum.yaml")
SPEC = CURRICULUM.levels[0]
BASE = {
    "study_name": "level_1-abc",
    "data": "bars-1",
    "n_trials": 100,
    "walk_forward_trials": 48,
    "warm_start": {"fast_window": 10},
    "chain_trials": 0,
    "code_version": "0.1+abc",
}


def _key(**changes: object) -> str:
    return reuse_key(SPEC, CURRICULUM, **{**BASE, **changes})  # type: ignore[arg-type]


def test_every_input_changes_the_key() -> None:
    base = _key()
    assert base == _key()  # deterministic
    changed = [
        _key(study_name="level_1-def"),
        _key(data="bars-2"),
        _key(n_trials=101),
        _key(walk_forward_trials=8),
        _key(warm_start={"fast_window": 11}),
        _key(chain_trials=100),
        _key(code_version="0.1+def"),
        reuse_key(replace(SPEC, pass_criteria={}), CURRICULUM, **BASE),  # type: ignore[arg-type]
        reuse_key(SPEC, replace(CURRICULUM, holdout_days=CURRICULUM.holdout_days + 1), **BASE),  # type: ignore[arg-type]
    ]
    assert base not in changed and len(set(changed)) == len(changed)


def test_a_result_is_reused_only_with_its_key_its_trials_and_its_mlflow_run() -> None:
    key = _key()
    row = {"level": 1, "name": "L1", "direction": "long", "passed": True}
    stored = LevelResult.from_row({**row, REUSE_KEY: key, "n_trials": 100, "mlflow_run_id": "r1"})
    assert reusable(stored, key, 100)
    assert not reusable(stored, key, 101)  # a trial added since
    assert not reusable(stored, key, None)  # the study is gone
    assert not reusable(stored, _key(n_trials=150), 100)
    assert not reusable(replace(stored, mlflow_run_id=None), key, 100)
    assert not reusable(replace(stored, skipped=True), key, 100)
    assert not reusable(None, key, 100)


def _side(**changes: object) -> str:
    inputs = {k: v for k, v in {**BASE, **changes}.items() if k != "data"}
    return study_key(SPEC, CURRICULUM, **inputs)  # type: ignore[arg-type]


def test_the_study_key_changes_with_every_input_but_the_bars_no_trial_reads() -> None:
    base = _side()
    assert base == _side()
    changed = [
        _side(study_name="level_1-def"),  # the bars trials read are in the study's name
        _side(n_trials=101),
        _side(walk_forward_trials=8),
        _side(warm_start={"fast_window": 11}),
        _side(chain_trials=100),
        _side(code_version="0.1+def"),
        study_key(replace(SPEC, pass_criteria={}), CURRICULUM, **_side_inputs()),
        study_key(SPEC, replace(CURRICULUM, holdout_days=1), **_side_inputs()),
    ]
    assert base not in changed and len(set(changed)) == len(changed)
    # New bars in the test era or the hold-out change the data fingerprint only: the whole
    # result's key moves, its study side's does not.
    assert _key(data="bars-2") != _key() and _side(data="bars-2") == base


def _side_inputs() -> dict:
    return {k: v for k, v in BASE.items() if k != "data"}


def test_a_study_side_is_retested_only_with_its_key_its_trials_and_its_mlflow_run() -> None:
    key = _side()
    row = {"level": 1, "name": "L1", "direction": "long", "passed": True}
    stored = LevelResult.from_row(
        {**row, STUDY_KEY: key, REUSE_KEY: _key(), "n_trials": 100, "mlflow_run_id": "r1"}
    )
    assert stored.study_key == key  # read back from the stored row
    assert retestable(stored, key, 100)
    assert not reusable(stored, _key(data="bars-2"), 100)  # new bars: not reusable whole ...
    assert retestable(stored, key, 100)  # ... but its study side stands
    assert not retestable(stored, key, 101)  # a trial added since
    assert not retestable(stored, key, None)  # the study is gone
    assert not retestable(stored, _side(warm_start={"fast_window": 11}), 100)
    assert not retestable(replace(stored, mlflow_run_id=None), key, 100)
    assert not retestable(replace(stored, skipped=True), key, 100)
    assert not retestable(replace(stored, study_key=None), key, 100)  # stored before the key
    assert not retestable(None, key, 100)
