"""A level's stored result as records: the row it writes, and rows stored before it read back.

``tests/data/level_result_rows.json`` holds three rows exactly as the warehouse stored them
before these records existed (commit cfcc158: ``outcome_to_dict`` and ``skipped_level_result``
returning dicts, the level asset adding ``mlflow_run_id`` / ``reuse_key`` and, for a reused
result, ``reused`` / ``reused_from_run``), from a robustness level run on the bundled 2022-2023
BTC and ETH bars (16 trials, seed 3): a fresh result, the same result reused by a later run, and
the next level skipped after it.
"""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from ffe_dagster.core.backtest.reference import Direction
from ffe_dagster.core.study.level_records import outcome_result
from ffe_dagster.core.study.level_result import LevelResult, LevelTry
from ffe_dagster.core.study.level_specs import CriterionResult, LevelSpec
from ffe_dagster.core.study.levels import LevelOutcome, skipped_level_result
from ffe_dagster.core.study.optimize import StudyOutcome, TrialRecord
from ffe_dagster.core.study.progression import Decision, Progression
from ffe_dagster.core.study.selection import Candidate
from ffe_dagster.resources.warehouse import (
    WarehouseResource,
    decode_result_json,
    encode_result_json,
)

ROWS: dict[str, str] = json.loads(
    (Path(__file__).parents[1] / "data" / "level_result_rows.json").read_text()
)

A = Candidate(
    number=3,
    params={"stop_loss_pct": 2.0, "fast_window": 12, "stop_mode": "trailing"},
    train={"sharpe": 1.5, "win_rate_pct": 55.0},
    validation={"sharpe": 1.25, "win_rate_pct": 52.5},
    validation_feasible=True,
)
B = Candidate(4, {"stop_loss_pct": 3.0, "fast_window": 20, "stop_mode": "fixed"}, {}, {}, False)


def _outcome() -> LevelOutcome:
    trials = tuple(TrialRecord(n, A.params, {"sharpe": 1.0}, feasible=n != 4) for n in range(1, 6))
    return LevelOutcome(
        level=2,
        name="Bear",
        direction="short",
        segments=(("BTC_USDT", "2022-01-01T00:00:00", "2022-06-30T23:00:00", 4343),),
        study=StudyOutcome("level_2-abc", trials, (3, 4), 2, 3, "converged", 1.5),
        candidates=(A, B),
        chosen=A,
        test={"sharpe": 0.75, "n_trades": 31.0},
        stress={"covid": {"total_return_pct": -2.5}},
        criteria=(CriterionResult("min_sharpe", 0.5, 0.75, True),),
        parameter_shift={"stop_loss_pct": 0.25},
        progression=Progression(Decision.SKIP_NEXT, ("win rate 61% > 60%",)),
        tries=(LevelTry(1, 5, 5, "converged", 1.5, "skip_next", ("win rate 61% > 60%",)),),
        analysis={"stability": {"stop_loss_pct": "stable"}},
        chain_trials=105,
    )


def test_a_level_outcome_writes_the_row_outcome_to_dict_wrote() -> None:
    # The mapping the removed ``outcome_to_dict`` returned for this outcome, key by key.
    candidate_a = {
        "number": 3,
        "params": {"stop_loss_pct": 2.0, "fast_window": 12, "stop_mode": "trailing"},
        "train": {"sharpe": 1.5, "win_rate_pct": 55.0},
        "validation": {"sharpe": 1.25, "win_rate_pct": 52.5},
        "validation_feasible": True,
    }
    candidate_b = {
        "number": 4,
        "params": {"stop_loss_pct": 3.0, "fast_window": 20, "stop_mode": "fixed"},
        "train": {},
        "validation": {},
        "validation_feasible": False,
    }
    row = outcome_result(_outcome()).to_json()
    assert row == {
        "level": 2,
        "name": "Bear",
        "direction": "short",
        "passed": True,
        "study_name": "level_2-abc",
        "n_trials": 5,
        "new_trials": 3,
        "feasible_trials": 4,
        "pareto_size": 2,
        "segments": [["BTC_USDT", "2022-01-01T00:00:00", "2022-06-30T23:00:00", 4343]],
        "chosen": candidate_a,
        "candidates": [candidate_a, candidate_b],
        "test": {"sharpe": 0.75, "n_trades": 31.0},
        "stress": {"covid": {"total_return_pct": -2.5}},
        "criteria": [
            {"name": "min_sharpe", "threshold": 0.5, "value": 0.75, "passed": True, "note": ""}
        ],
        "parameter_shift": {"stop_loss_pct": 0.25},
        "progression": {"decision": "skip_next", "reasons": ["win rate 61% > 60%"]},
        "tries": [
            {
                "try": 1,
                "n_trials": 5,
                "completed_trials": 5,
                "stop_reason": "converged",
                "seconds": 1.5,
                "decision": "skip_next",
                "reasons": ["win rate 61% > 60%"],
            }
        ],
        "chain_trials": 105,
        "stop_reason": "converged",
        "analysis": {"stability": {"stop_loss_pct": "stable"}},
    }
    stored_order = list(json.loads(ROWS["fresh"]))  # then mlflow_run_id, reuse_key
    assert list(row) == stored_order[: len(row)]


def test_a_result_reads_back_equal_to_itself() -> None:
    result = replace(outcome_result(_outcome()), mlflow_run_id="run-1", reuse_key="k" * 8)
    assert LevelResult.from_row(result.to_json()) == result
    stored = decode_result_json(encode_result_json(result.to_json()))
    assert LevelResult.from_row(stored) == result
    reused = replace(result, new_trials=0, reused=True, reused_from_run="run-0")
    assert LevelResult.from_row(reused.to_json()) == reused
    skipped = skipped_level_result(_spec(3), result)
    assert LevelResult.from_row(skipped.to_json()) == skipped
    retested = replace(result, study_key="s" * 8, study_side_from_run="run-0")
    assert LevelResult.from_row(retested.to_json()) == retested
    assert retested.plots_run == "run-0"  # its plots stay in the run that drew them
    assert result.plots_run == "run-1" and reused.plots_run == "run-0"


@pytest.mark.parametrize("kind", ["fresh", "reused", "skipped"])
def test_rows_stored_by_the_previous_code_read_back_unchanged(kind: str) -> None:
    text = ROWS[kind]
    result = LevelResult.from_row(decode_result_json(text))
    assert encode_result_json(result.to_json()) == text  # byte for byte, NaN and order too
    assert result.skipped is (kind == "skipped")
    assert result.reused is (kind == "reused")


def test_a_stored_row_gives_typed_fields() -> None:
    fresh = LevelResult.from_row(decode_result_json(ROWS["fresh"]))
    assert (fresh.level, fresh.direction, fresh.passed, fresh.n_trials) == (4, "both", False, 16)
    assert fresh.chosen is not None and fresh.chosen == fresh.candidates[0]
    assert fresh.chosen.validation_sharpe == pytest.approx(0.6160483567676892)
    assert [c.name for c in fresh.criteria if not c.passed] == [
        "min_deflated_sharpe",
        "stress_min_total_return_pct",
        "min_win_rate_pct",
    ]
    unmeasured = fresh.criteria[2]
    assert unmeasured.value != unmeasured.value and unmeasured.note.startswith("not evaluated")
    assert fresh.decision is Decision.REPEAT and fresh.tries[0].seconds == pytest.approx(38.407)
    assert fresh.mlflow_run_id == "0123456789abcdef0123456789abcdef"
    skipped = LevelResult.from_row(decode_result_json(ROWS["skipped"]))
    assert skipped.chosen == fresh.chosen and skipped.chain_trials == fresh.chain_trials
    assert skipped.study_name == "" and skipped.mlflow_run_id is None


def _spec(level: int) -> LevelSpec:
    return LevelSpec(
        level=level,
        asset="next",
        name="next",
        direction=Direction.BOTH,
        windows=(),
        trials={"quick": 16},
        pass_criteria={},
        promotes=(),
    )


def test_the_skip_and_the_reuse_write_the_rows_they_wrote_before() -> None:
    fresh = LevelResult.from_row(decode_result_json(ROWS["fresh"]))
    # The previous code skipped level 5 after this level 4 with a skip_next decision.
    previous = replace(fresh, progression=Progression(Decision.SKIP_NEXT, ("win rate 61% > 60%",)))
    skipped = skipped_level_result(_spec(5), previous)
    assert encode_result_json(skipped.to_json()) == ROWS["skipped"]
    # The level asset's reuse: no new trials, the source run kept, a new MLflow run.
    reused = replace(
        fresh,
        new_trials=0,
        reused=True,
        reused_from_run=fresh.mlflow_run_id,
        mlflow_run_id="fedcba9876543210fedcba9876543210",
    )
    assert encode_result_json(reused.to_json()) == ROWS["reused"]


def test_a_bad_row_is_a_clear_error() -> None:
    row = decode_result_json(ROWS["fresh"])
    with pytest.raises(ValueError, match="invalid level result row: KeyError\\('level'\\)"):
        LevelResult.from_row({k: v for k, v in row.items() if k != "level"})
    with pytest.raises(ValueError, match="invalid level result row"):
        LevelResult.from_row({**row, "n_trials": "many"})
    with pytest.raises(ValueError, match="'sideways'"):
        LevelResult.from_row({**row, "progression": {"decision": "sideways", "reasons": []}})


def test_the_warehouse_stores_and_reads_back_the_record(tmp_path: Path) -> None:
    warehouse = WarehouseResource(path=str(tmp_path / "warehouse.duckdb"))
    assert warehouse.latest_level_result(4) is None
    fresh = LevelResult.from_row(decode_result_json(ROWS["fresh"]))
    warehouse.save_level_result(4, "level_4", "run-a", fresh)
    back = warehouse.latest_level_result(4)
    assert back is not None and encode_result_json(back.to_json()) == ROWS["fresh"]
    assert back.chosen == fresh.chosen and back.candidates == fresh.candidates
