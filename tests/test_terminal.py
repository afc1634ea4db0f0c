"""What the terminal shows after a cycle, and an export that names every instrument."""

import json
from pathlib import Path

from ffe_dagster.cli import regime_lines
from ffe_dagster.core.promotion.config import LimitedGateConfig, Stage
from ffe_dagster.core.promotion.records import RegimeAction
from ffe_dagster.core.study.level_result import LevelResult
from ffe_dagster.promotion.export import NO_CONFIRMED_REGIME, export_current
from ffe_dagster.resources.registry import ParameterRegistryResource
from ffe_dagster.terminal import (
    SUMMARY_MAX_LINES,
    CycleFacts,
    RegimeLine,
    TrialProgress,
    console_run_config,
    cycle_summary,
)
from tests.level_rows import level_row


def _level(level: int, passed: bool, failed: tuple[str, ...] = ()) -> LevelResult:
    names = ("win_rate", "sharpe", "max_drawdown", "profit_factor", "total_return")
    return level_row(
        {
            "level": level,
            "name": f"level {level}",
            "passed": passed,
            "n_trials": 100 + level,
            "new_trials": 100 + level,
            "feasible_trials": 40 + level,
            "chosen": {
                "number": 7,
                "params": {"stop_loss_pct": 1.25, "take_profit_pct": 3.5, "fast": 12},
                "validation": {
                    "sharpe": 1.234,
                    "win_rate_pct": 55.55,
                    "max_drawdown_pct": 7.25,
                    "n_trades": 42,
                },
            },
            "test": {
                "sharpe": -0.5,
                "win_rate_pct": 41.0,
                "max_drawdown_pct": 12.0,
                "n_trades": 17,
            },
            "criteria": [
                {"name": n, "threshold": 1.0, "value": 0.0, "passed": n not in failed}
                for n in names
            ],
            "mlflow_run_id": f"run{level}",
        }
    )


def _facts(levels: list[LevelResult], regimes: list[RegimeLine]) -> CycleFacts:
    return CycleFacts(
        seconds=42.04,
        trial_profile="full",
        step_seconds={"ingest_job": 10.0, "regimes_job": 2.0, "optimization_job": 30.0},
        levels=levels,
        regimes=regimes,
        active={
            "BTC_USDT": {"regime": None, "use": "DEFAULT", "reason": NO_CONFIRMED_REGIME},
            "EUR_USD": {"regime": "BULL", "use": "BULL"},
        },
        run_ids={"ingest_job": "a1", "regimes_job": "b2", "optimization_job": "c3"},
        export_path="/x/promoted_parameters.json",
    )


def test_summary_names_trials_parameters_metrics_verdicts_regimes_and_where_to_look() -> None:
    levels = [_level(1, True), _level(2, False, ("sharpe", "win_rate")), _level(3, True)]
    regimes = [
        RegimeLine("BULL", "nothing promoted", "reject v1: COLD: Sharpe 0.10 < 0.50"),
        RegimeLine("DEFAULT", "v2 current (level 3)", "promote v2: COLD passed"),
    ]
    lines = cycle_summary(_facts(levels, regimes))
    text = "\n".join(lines)
    assert len(lines) <= SUMMARY_MAX_LINES
    assert lines[0].startswith("cycle finished in 42.0s (trial profile 'full')")
    assert "L1 level 1: 101 trials (101 new), 41 feasible; PASSED" in text
    assert "L2 level 2: 102 trials (102 new), 42 feasible; FAILED win_rate, sharpe" in text
    assert "chosen: stop_loss_pct=1.25, take_profit_pct=3.5, fast=12" in text
    assert "validation: Sharpe 1.23, win 55.5%, maxDD 7.2%, 42 trades" in text
    assert "test:       Sharpe -0.50, win 41.0%, maxDD 12.0%, 17 trades" in text
    assert "BULL: nothing promoted: reject v1: COLD: Sharpe 0.10 < 0.50" in text
    assert "BTC_USDT: regime none confirmed, use DEFAULT (no regime is confirmed" in text
    assert "EUR_USD: regime BULL, use BULL" in text
    assert "export: /x/promoted_parameters.json" in text
    assert "MLflow runs: L1 run1, L2 run2, L3 run3" in text
    assert "http://127.0.0.1:3000" in text and "optimization_job c3" in text


def test_summary_never_exceeds_its_line_budget() -> None:
    levels = [_level(i, False, ("sharpe",)) for i in range(1, 30)]
    regimes = [RegimeLine(f"R{i}", "stage", "x" * 400) for i in range(10)]
    lines = cycle_summary(_facts(levels, regimes))
    assert len(lines) == SUMMARY_MAX_LINES
    assert lines[-1] == "... (more in the Dagster UI)"
    assert max(len(line) for line in lines) <= 160


def test_console_stays_quiet_unless_verbose() -> None:
    quiet = console_run_config(False)["loggers"]["console"]["config"]["log_level"]
    loud = console_run_config(True)["loggers"]["console"]["config"]["log_level"]
    assert (quiet, loud) == ("WARNING", "DEBUG")


def test_trial_progress_keeps_the_best_feasible_sharpe() -> None:
    bar = TrialProgress("L1", 3)
    bar.advance(1, {"sharpe": 2.0}, False)  # infeasible: never the best
    bar.advance(2, {"sharpe": 0.7}, True)
    bar.advance(3, {"sharpe": 0.4}, True)
    bar.close()
    assert bar.best == 0.7


def test_export_names_every_instrument_with_the_set_to_use(tmp_path: Path) -> None:
    registry = ParameterRegistryResource(url=f"sqlite:///{tmp_path / 'registry.db'}")
    registry.record(
        regime="BULL",
        level=1,
        params={"stop_loss_pct": 1.0},
        metrics={"sharpe": 1.0},
        stage=Stage.COLD,
        promoted=True,
        reason="test",
        trigger="manual",
        run_id="r1",
    )
    path = tmp_path / "promoted_parameters.json"
    active = {"BTC_USDT": None, "ETH_USDT": "BEAR", "EUR_USD": "BULL"}
    export_current(registry, path, "r1", LimitedGateConfig(), active=active)
    exported = json.loads(path.read_text())["active"]
    assert exported == {
        "BTC_USDT": {"regime": None, "use": "DEFAULT", "reason": NO_CONFIRMED_REGIME},
        "ETH_USDT": {"regime": "BEAR", "use": "DEFAULT", "reason": "no BEAR set is current yet"},
        "EUR_USD": {"regime": "BULL", "use": "BULL"},
    }
    # a manual rollback (no mapping given) keeps every instrument of the previous file
    export_current(registry, path, "r2", LimitedGateConfig())
    assert json.loads(path.read_text())["active"] == exported


def test_regime_lines_say_why_a_level_blocked_its_regime(tmp_path: Path) -> None:
    registry = ParameterRegistryResource(url=f"sqlite:///{tmp_path / 'registry.db'}")
    why = "level 1 did not pass: Sharpe 0.41 < 0.8"
    for run_id in ("earlier", "this-run"):
        registry.note_decision(
            regime="BULL",
            level=1,
            stage=Stage.COLD,
            action=RegimeAction.BLOCKED,
            reason=why,
            trigger="manual",
            run_id=run_id,
        )
    (bull, bear) = regime_lines(registry, ["BULL", "BEAR"], "this-run")
    assert (bull.regime, bull.stage, bull.reason) == ("BULL", "nothing promoted", f"blocked: {why}")
    assert bear.reason == "no decision this run"
