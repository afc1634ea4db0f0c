"""Promotion across cycles on real bars with a real SQLite registry: the state machine
COLD -> WARM -> LIMITED -> FULL, and the asset's wiring (trigger from the run tags, metadata,
export, live results read from files).

Bars arrive cycle by cycle by cutting the bundled hourly BTC/USDT and ETH/USDT history of 2022
at later and later instants; "now" moves with them."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from dagster import materialize

from ffe_dagster.config import load_curriculum, load_universe
from ffe_dagster.config.settings import Settings
from ffe_dagster.core.backtest.reference import CostModel, Direction
from ffe_dagster.core.promotion.config import LimitedGateConfig, PromotionRegime, Stage
from ffe_dagster.core.promotion.performance import (
    LIVE_RESULT_COLUMNS,
    paper_performance,
    watermark,
)
from ffe_dagster.core.promotion.records import Action, RegimeAction, VersionStatus
from ffe_dagster.core.study.selection import Candidate
from ffe_dagster.definitions import EXPORT_FILE
from ffe_dagster.promotion.asset import build_promotion_asset
from ffe_dagster.promotion.decisions import CurrentChange
from ffe_dagster.promotion.export import export_current
from ffe_dagster.promotion.live_results import read_live_results
from ffe_dagster.promotion.state_machine import RegimeCandidates
from ffe_dagster.resources.registry import ParameterRegistryResource
from ffe_dagster.resources.tracking import MlflowTrackingResource
from ffe_dagster.resources.warehouse import WarehouseResource
from ffe_dagster.triggers import run_trigger
from tests.level_rows import level_row
from tests.promotion_cycle_helpers import (
    HOUR,
    PPY,
    STRATEGY,
    T0,
    A,
    B,
    decisions,
    live_trades,
    load_history,
    run_cycle,
    upto,
)


@pytest.fixture(scope="module")
def history() -> dict[str, pl.DataFrame]:
    return load_history()


def _paper(bars, params, since):
    return paper_performance(
        bars,
        params,
        since=since,
        strategy=STRATEGY,
        direction=Direction.BOTH,
        costs=CostModel(),
        periods_per_year=PPY,
    )


def test_a_candidate_climbs_cold_warm_limited_full_across_cycles(
    history: dict[str, pl.DataFrame], tmp_path: Path
) -> None:
    registry = ParameterRegistryResource(url=f"sqlite:///{tmp_path / 'registry.db'}")
    export = tmp_path / "promoted_parameters.json"
    level4 = RegimeCandidates(
        regime=PromotionRegime.DEFAULT,
        level=4,
        direction=Direction.BOTH,
        candidates=[
            Candidate(11, B, {}, {"sharpe": 2.0}, True),
            Candidate(12, A, {}, {"sharpe": 2.0}, True),
        ],
        source_run_id="mlflow-level-4",
    )
    five = timedelta(minutes=5)
    # B is proposed only from cycle 6 on: a set COLD judged once (B fails it on T0) is never
    # judged again (tests/test_cold_once.py)
    only_a = RegimeCandidates(
        regime=PromotionRegime.DEFAULT,
        level=4,
        direction=Direction.BOTH,
        candidates=[Candidate(12, A, {}, {"sharpe": 2.0}, True)],
        source_run_id="mlflow-level-4",
    )

    # cycle 1: A passes COLD and starts paper trading from the newest bars
    report = run_cycle(registry, upto(history, T0), T0 + five, "cycle-1", [only_a])
    assert decisions(report) == [("DEFAULT", 1, Stage.COLD, Action.ADVANCE)]
    v1 = registry.version("DEFAULT", 1)
    assert (v1.stage, v1.status, v1.params) == (Stage.WARM, VersionStatus.CANDIDATE, A)
    assert v1.data_marks == {"BTC_USDT": T0, "ETH_USDT": T0}
    assert (v1.candidate_number, v1.source_run_id) == (12, "mlflow-level-4")
    assert v1.metrics["window_days"] == 14.0 and v1.metrics["n_trades"] >= 20

    # cycle 2: two hours of new bars are not enough to judge; A waits, B is not tried again
    report = run_cycle(
        registry, upto(history, T0 + 2 * HOUR), T0 + 2 * HOUR + five, "cycle-2", [level4]
    )
    assert decisions(report) == [
        ("DEFAULT", 1, Stage.WARM, Action.WAIT),
        ("DEFAULT", None, Stage.COLD, RegimeAction.SKIP),
    ]
    assert "window_hours not judged (2.0 of 4 h so far)" in report.rows[0].reason

    # cycle 3: 13 days later A has 24 paper trades and beats staying flat -> LIMITED
    t3 = T0 + timedelta(days=13)
    now3 = t3 + five
    report = run_cycle(registry, upto(history, t3), now3, "cycle-3", [level4])
    assert decisions(report)[0] == ("DEFAULT", 1, Stage.WARM, Action.ADVANCE)
    warm = registry.transitions("DEFAULT")[-1]
    expected = _paper(upto(history, t3), A, {"BTC_USDT": T0, "ETH_USDT": T0})
    assert warm.metrics["n_trades"] == expected.n_trades == 24
    assert warm.metrics["sharpe"] == expected.sharpe
    assert warm.metrics["current_sharpe"] == 0.0  # no current version: staying flat
    payload = export_current(registry, export, "cycle-3", LimitedGateConfig())
    assert payload["regimes"]["DEFAULT"] is None
    trial = payload["limited"]["DEFAULT"]
    assert (trial["version"], trial["capital_fraction"]) == (1, 0.1)
    assert trial["judge_after"] == (now3 + timedelta(hours=24)).isoformat()

    # the trading system trades v1 with 10 % and reports 20 trades: 16 win $1, 4 lose $0.50
    live = live_trades(1, now3 + 30 * timedelta(minutes=1), [1.0, 1.0, 1.0, -0.5, 1.0] * 4)
    # cycle 4: 12 hours in, the 24 h window is not complete
    report = run_cycle(registry, upto(history, t3), now3 + 12 * HOUR, "cycle-4", live=live)
    assert decisions(report) == [("DEFAULT", 1, Stage.LIMITED, Action.WAIT)]
    # cycle 5: after 25 hours -> FULL, the new current version
    now5 = now3 + 25 * HOUR
    report = run_cycle(registry, upto(history, t3), now5, "cycle-5", live=live)
    assert decisions(report)[0] == ("DEFAULT", 1, Stage.LIMITED, Action.PROMOTE)
    assert report.changes == [
        CurrentChange("DEFAULT", Action.PROMOTE, 1, None, report.rows[0].reason, "schedule")
    ]
    current = registry.current("DEFAULT")
    assert current is not None and current.version == 1 and current.stage == Stage.FULL
    assert current.stage_marks == watermark(upto(history, t3))
    promote = registry.transitions("DEFAULT")[-1]
    assert (promote.metrics["n_trades"], promote.metrics["n_wins"]) == (20.0, 16.0)
    assert promote.metrics["pnl_usd"] == pytest.approx(14.0)
    payload = export_current(registry, export, "cycle-5", LimitedGateConfig())
    assert payload["regimes"]["DEFAULT"]["version"] == 1
    assert payload["regimes"]["DEFAULT"]["promoted_by_run"] == "cycle-5"
    assert payload["limited"]["DEFAULT"] is None

    assert registry.cold_bars_used("DEFAULT") == {"BTC_USDT": T0, "ETH_USDT": T0}
    # cycle 6: B passes COLD on bars after T0 (the newest bar cycle 1's COLD test used) and
    # paper-trades from 2022-11-17 against the current A
    t6 = T0 + timedelta(days=16)
    report = run_cycle(registry, upto(history, t6), t6 + five, "cycle-6", [level4], live)
    assert ("DEFAULT", 2, Stage.COLD, Action.ADVANCE) in decisions(report)
    assert ("DEFAULT", 1, Stage.FULL, "watch: wait") in decisions(report)  # 3 trades since FULL
    assert registry.version("DEFAULT", 2).params == B

    # cycle 7: B is judged on the bars after 2022-11-17, A on the very same bars
    t7 = T0 + timedelta(days=30)
    report = run_cycle(registry, upto(history, t7), t7 + five, "cycle-7", [level4], live)
    judged = next(t for t in registry.transitions("DEFAULT") if t.run_id == "cycle-7")
    since = watermark(upto(history, t6))
    b_perf = _paper(upto(history, t7), B, since)
    a_perf = _paper(upto(history, t7), A, since)
    assert judged.version == 2 and judged.from_stage == Stage.WARM
    assert judged.metrics["sharpe"] == b_perf.sharpe
    assert judged.metrics["current_sharpe"] == a_perf.sharpe
    assert judged.metrics["current_n_trades"] == a_perf.n_trades
    # B lost on these bars: rejected at WARM with the reasons named
    assert judged.action is Action.REJECT and "sharpe_vs_current" in judged.reason
    assert ("DEFAULT", 1, Stage.FULL, "watch: pass") in decisions(report)
    # a set rejected after paper trading is not tried again
    assert ("DEFAULT", None, Stage.COLD, RegimeAction.SKIP) in decisions(report)

    trail = registry.transitions("DEFAULT")
    assert {t.trigger for t in trail} == {"schedule"}
    assert [(t.action, t.version, t.run_id) for t in trail] == [
        (Action.ADVANCE, 1, "cycle-1"),
        (Action.WAIT, 1, "cycle-2"),
        (Action.ADVANCE, 1, "cycle-3"),
        (Action.WAIT, 1, "cycle-4"),
        (Action.PROMOTE, 1, "cycle-5"),
        (Action.ADVANCE, 2, "cycle-6"),
        (Action.REJECT, 2, "cycle-7"),
    ]
    assert all(t.reason and t.checks for t in trail)


def _seed_warehouse(settings: Settings, history: dict[str, pl.DataFrame]) -> None:
    warehouse = WarehouseResource(path=str(settings.warehouse_path))
    for symbol, frame in upto(history, T0).items():
        warehouse.replace_window(
            "validated_bars", symbol, datetime(2000, 1, 1, tzinfo=UTC), T0 + HOUR, frame
        )
    for level, params in ((1, A), (2, B), (4, A)):
        candidate = {"number": 3, "params": params, "validation": {"sharpe": 2.0}}
        result = {
            "level": level,
            "passed": True,
            "chosen": candidate,
            "criteria": [],
            "candidates": [candidate],
            "mlflow_run_id": f"mlflow-{level}",
        }
        warehouse.save_level_result(level, f"level_{level}", "run", level_row(result))


def test_the_asset_records_the_trigger_and_reports_per_regime(
    tiny_settings: Settings, history: dict[str, pl.DataFrame]
) -> None:
    _seed_warehouse(tiny_settings, history)
    asset = build_promotion_asset(
        load_curriculum(tiny_settings.curriculum_path),
        load_universe(tiny_settings.universe_path),
        tiny_settings.export_dir / EXPORT_FILE,
        tiny_settings.var_dir / "live_results",
    )
    registry = ParameterRegistryResource(url=tiny_settings.registry_url)
    result = materialize(
        [asset],
        resources={
            "warehouse": WarehouseResource(path=str(tiny_settings.warehouse_path)),
            "registry": registry,
            "mlflow_tracking": MlflowTrackingResource(
                tracking_uri=tiny_settings.mlflow_tracking_uri,
                artifact_dir=str(tiny_settings.mlflow_artifact_dir),
                experiment=tiny_settings.mlflow_experiment,
            ),
        },
        tags={"dagster/schedule_name": "cycle_schedule"},
    )
    assert result.success
    trail = registry.transitions()
    assert {t.regime for t in trail} == {"BULL", "BEAR", "SIDEWAYS", "DEFAULT"}
    assert {(t.trigger, t.run_id) for t in trail} == {("schedule", result.run_id)}
    # the level-4 set passes COLD for both regimes it serves and waits in WARM
    for regime in ("SIDEWAYS", "DEFAULT"):
        (flying,) = registry.in_flight(regime)
        assert (flying.stage, flying.source_run_id) == (Stage.WARM, "mlflow-4")
    (event,) = result.asset_materializations_for_node("promoted_parameters")
    table = event.metadata["decisions"].value
    assert isinstance(table, str)
    assert table.startswith("| regime | version | stage | decision | reasons |")
    for regime in ("BULL", "BEAR", "SIDEWAYS", "DEFAULT"):
        assert f"| {regime} | v" in table
    exported = json.loads((tiny_settings.export_dir / EXPORT_FILE).read_text())
    assert exported["regimes"] == dict.fromkeys(("BULL", "BEAR", "SIDEWAYS", "DEFAULT"))
    # The cycle report and the deployment recommendation are published with the decisions.
    recommendation = event.metadata["deployment_recommendation"].value
    assert isinstance(recommendation, str) and "SIDEWAYS" in recommendation


@pytest.mark.parametrize(
    ("tags", "trigger"),
    [
        ({"dagster/schedule_name": "cycle_schedule", "ffe/trigger": "manual"}, "schedule"),
        ({"dagster/sensor_name": "regime_change_sensor"}, "sensor"),
        ({"dagster/sensor_name": "cycle_chain_sensor", "ffe/trigger": "schedule"}, "schedule"),
        ({"ffe/trigger": "sensor"}, "sensor"),
        ({}, "manual"),
    ],
)
def test_the_trigger_comes_from_the_run_tags(tags: dict[str, str], trigger: str) -> None:
    assert run_trigger(tags) == trigger


def test_an_unknown_trigger_tag_is_refused() -> None:
    with pytest.raises(ValueError, match="ffe/trigger must be"):
        run_trigger({"ffe/trigger": "cron"})


def test_live_results_are_read_from_parquet_and_csv(tmp_path: Path) -> None:
    folder = tmp_path / "live_results"
    assert read_live_results(folder).is_empty()  # nothing reported yet
    folder.mkdir()
    start = datetime(2024, 1, 1, tzinfo=UTC)
    live_trades(1, start, [1.0, -1.0]).write_parquet(folder / "day1.parquet")
    live_trades(1, start, [1.0, -1.0]).write_parquet(folder / "day1-again.parquet")
    csv = live_trades(2, start, [3.0], regime="BEAR").with_columns(
        pl.col("opened_at", "closed_at").dt.replace_time_zone(None)
    )
    csv.write_csv(folder / "bear.csv")
    (folder / "day2.parquet.tmp").write_text("being written")  # not a results file yet
    frame = read_live_results(folder)
    assert frame.height == 3
    assert frame.schema == pl.Schema(LIVE_RESULT_COLUMNS)
    assert frame.filter(pl.col("regime") == "BEAR")["closed_at"][0] == start
