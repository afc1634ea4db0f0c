"""Profit factor without a losing trade is infinite: in the metrics, the engine, vectorbt, the pass
criteria and every store (warehouse JSON, MLflow, Dagster metadata).

The hand-worked case: three long trades of 1 unit bought at 100 and sold at 100.30, no fees, so
three $0.30 wins, gross profit $0.90, gross loss 0. The old code returned 0.9 (the gross profit in
dollars) and failed a 1.3 threshold with zero losses.
"""

import math
from pathlib import Path

import numpy as np
import pytest

from ffe_dagster.core.backtest import engine
from ffe_dagster.core.backtest.metrics import (
    profit_factor,
    profit_factor_of,
    spell_non_finite,
    split_non_finite,
)
from ffe_dagster.core.backtest.reference import (
    CostModel,
    Direction,
    Segment,
    StopMode,
    TradeParams,
    run_backtest,
    run_engine,
    simulate,
)
from ffe_dagster.core.study.level_result import LevelResult
from ffe_dagster.core.study.level_specs import evaluate_pass_criteria
from ffe_dagster.resources.warehouse import (
    WarehouseResource,
    decode_result_json,
    encode_result_json,
)

CLOSE = np.array([100.0, 100.3, 100.0, 100.3, 100.0, 100.3, 100.0])
SIGNALS = np.array([1, -1, 1, -1, 1, -1, 0], dtype=np.int8)
# 1 % of the 10,000 starting cash = $100 = 1 unit at 100; no stops, no costs.
PARAMS = TradeParams(math.nan, math.nan, 1.0, 1.0, StopMode.FIXED)
NO_COSTS = CostModel(fee_pct=0.0, slippage_pct=0.0)


def _segment() -> Segment:
    ts = np.arange(CLOSE.size).astype("datetime64[h]").astype("datetime64[us]")
    return Segment("X", ts, CLOSE, CLOSE, CLOSE, CLOSE, periods_per_year=8766.0)


def test_profit_factor_by_hand() -> None:
    assert profit_factor(np.array([0.3, 0.3, 0.3])) == math.inf
    assert profit_factor(np.array([0.3, -0.1, 0.0])) == pytest.approx(3.0)
    assert profit_factor(np.array([])) == 0.0  # no trades: no gain, not a perfect record
    assert profit_factor(np.array([0.0, 0.0])) == 0.0
    assert profit_factor(np.array([-0.2])) == 0.0
    assert profit_factor_of(0.9, 0.0) == math.inf


def test_engine_and_vectorbt_agree_that_three_wins_are_infinite() -> None:
    segment = _segment()
    run = run_engine(segment, SIGNALS, direction=Direction.LONG, params=PARAMS, costs=NO_COSTS)
    pnl = run.trades[:, engine.T_PNL]
    assert pnl == pytest.approx([0.3, 0.3, 0.3], abs=1e-9)
    mine = run.metrics(8766.0)
    assert mine.n_trades == 3
    assert mine.profit_factor == math.inf
    reference = run_backtest(
        segment, SIGNALS, direction=Direction.LONG, params=PARAMS, costs=NO_COSTS
    )
    assert profit_factor(reference.pnl) == math.inf
    # vectorbt's own statistic says the same.
    portfolio = simulate(segment, SIGNALS, direction=Direction.LONG, params=PARAMS, costs=NO_COSTS)
    assert float(portfolio.trades.profit_factor()) == math.inf


def test_infinite_profit_factor_passes_the_threshold() -> None:
    [result] = evaluate_pass_criteria({"min_profit_factor": 1.3}, {"profit_factor": math.inf})
    assert result.passed and result.value == math.inf
    [result] = evaluate_pass_criteria({"min_profit_factor": 1.3}, {"profit_factor": 0.9})
    assert not result.passed


def test_level_result_json_keeps_infinity(tmp_path: Path) -> None:
    result = {
        "passed": True,
        "chosen": {"validation": {"profit_factor": math.inf, "sharpe": 1.5}},
        "test": [{"profit_factor": -math.inf}, {"x": "inf"}],
    }
    text = encode_result_json(result)
    assert "Infinity" not in text  # strict JSON, readable by any JSON parser
    assert '{"$float": "inf"}' in text
    assert decode_result_json(text) == result  # the string "inf" stays a string
    warehouse = WarehouseResource(path=str(tmp_path / "w.duckdb"))
    stored = LevelResult.from_row(
        {
            "level": 4,
            "name": "L4",
            "direction": "both",
            "passed": True,
            "chosen": {"number": 1, "params": {}, **result["chosen"]},
            "test": {"profit_factor": -math.inf},
        }
    )
    warehouse.save_level_result(4, "level_4", "run", stored)
    back = warehouse.latest_level_result(4)
    assert back is not None and back.chosen is not None
    assert back.chosen.validation["profit_factor"] == math.inf
    assert back.test["profit_factor"] == -math.inf


def test_mlflow_and_metadata_spell_infinity() -> None:
    finite, other = split_non_finite({"test_profit_factor": math.inf, "test_sharpe": 1.2})
    assert finite == {"test_sharpe": 1.2}
    assert other == {"test_profit_factor": "inf"}
    assert spell_non_finite({"a": [math.inf, 1.0], "b": -math.inf}) == {
        "a": ["inf", 1.0],
        "b": "-inf",
    }
