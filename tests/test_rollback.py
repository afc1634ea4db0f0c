"""Promotion across cycles on real bars with a real SQLite registry: the state machine
COLD -> WARM -> LIMITED -> FULL, automatic rollback (and suspension) on a safety breach seen on
new bars or in live results, the manual rollback job run by Dagster, and the asset's wiring
(trigger from the run tags, metadata, export).

Bars arrive cycle by cycle by cutting the bundled hourly BTC/USDT and ETH/USDT history of 2022
at later and later instants; "now" moves with them."""

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from dagster import AssetKey, materialize

from ffe_dagster.assets.promotion import build_promotion_asset
from ffe_dagster.config import load_curriculum, load_universe
from ffe_dagster.core.backtest import CostModel, Direction, run_engine
from ffe_dagster.core.curriculum import bars_to_segment
from ffe_dagster.core.evaluation import trade_params
from ffe_dagster.core.promotion import (
    LIVE_RESULT_COLUMNS,
    LimitedGateConfig,
    PromotionConfig,
    PromotionRegime,
    combine_live_results,
    paper_performance,
    watermark,
)
from ffe_dagster.core.strategies import get_strategy
from ffe_dagster.definitions import EXPORT_FILE, build_definitions
from ffe_dagster.promotion.cycle import (
    Candidate,
    CurrentChange,
    CycleReport,
    Market,
    RegimeCandidates,
    read_live_results,
    run_promotion_cycle,
    run_trigger,
)
from ffe_dagster.promotion.export import export_current, publish_current
from ffe_dagster.resources.registry import ParameterRegistryResource
from ffe_dagster.resources.tracking import MlflowTrackingResource
from ffe_dagster.resources.warehouse import WarehouseResource
from ffe_dagster.settings import PACKAGE_DIR, Settings

PPY = {"BTC_USDT": 24 * 365.0, "ETH_USDT": 24 * 365.0}
STRATEGY = get_strategy("sma_crossover")
CONFIG = PromotionConfig()
HOUR = timedelta(hours=1)


def _params(fast: int, slow: int, stop: float, take: float) -> dict[str, float | int | str]:
    return {
        "fast_window": fast,
        "slow_window": slow,
        "stop_loss_pct": stop,
        "take_profit_pct": take,
        "position_size_pct": 1.0,
        "trailing_stop_pct": 2.0,
        "stop_mode": "fixed",
    }


# Found by scanning sets on these bars: A passes COLD on 2022-11-01 and WARM 13 days later; B
# fails COLD then (its Sharpe fell more than 30 % below its validation Sharpe) and passes it
# on 2022-11-17; LOSER loses $7.90 on one day of May 2022.
A = _params(10, 29, 4.9, 2.8)
B = _params(14, 21, 4.4, 2.7)
LOSER = _params(7, 30, 1.4, 1.2)
T0 = datetime(2022, 11, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def history() -> dict[str, pl.DataFrame]:
    out = {}
    for symbol in PPY:
        frame = pl.read_parquet(PACKAGE_DIR / "data" / "samples" / f"{symbol}_1h.parquet")
        out[symbol] = frame.filter(
            (pl.col("ts") >= datetime(2022, 1, 1, tzinfo=UTC))
            & (pl.col("ts") < datetime(2023, 1, 1, tzinfo=UTC))
        ).select("ts", "open", "high", "low", "close", "volume")
    return out


def _upto(history: dict[str, pl.DataFrame], moment: datetime) -> dict[str, pl.DataFrame]:
    return {k: f.filter(pl.col("ts") <= moment) for k, f in history.items()}


def _market(bars: dict[str, pl.DataFrame]) -> Market:
    return Market(
        bars=bars, periods_per_year=PPY, strategy=STRATEGY, costs=CostModel(), bar_period=HOUR
    )


def _cycle(
    registry: ParameterRegistryResource,
    bars: dict[str, pl.DataFrame],
    now: datetime,
    run_id: str,
    candidates: Sequence[RegimeCandidates] = (),
    live: pl.DataFrame | None = None,
) -> CycleReport:
    return run_promotion_cycle(
        registry,
        regimes=candidates,
        market=_market(bars),
        live=combine_live_results([]) if live is None else live,
        now=now,
        config=CONFIG,
        level_directions={4: Direction.BOTH},
        trigger="schedule",
        run_id=run_id,
    )


def _decisions(report: CycleReport) -> list[tuple[str, int | None, str, str]]:
    return [(r.regime, r.version, r.stage, r.decision) for r in report.rows]


def _live_trades(
    version: int, start: datetime, pnls: Sequence[float], regime: str = "DEFAULT"
) -> pl.DataFrame:
    """Trades the trading system reports: one closes every 70 minutes from ``start``."""
    closes = [start + timedelta(minutes=70 * i) for i in range(len(pnls))]
    return pl.DataFrame(
        {
            "trade_id": [f"{regime}-{version}-{i}" for i in range(len(pnls))],
            "regime": [regime] * len(pnls),
            "version": [version] * len(pnls),
            "instrument": ["BTC_USDT"] * len(pnls),
            "opened_at": [c - timedelta(minutes=30) for c in closes],
            "closed_at": closes,
            "pnl_usd": list(pnls),
            "capital_usd": [1000.0] * len(pnls),
        },
        schema=dict(LIVE_RESULT_COLUMNS),
    )


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
        candidates=[Candidate(B, 2.0, 11), Candidate(A, 2.0, 12)],
        source_run_id="mlflow-level-4",
    )
    five = timedelta(minutes=5)

    # cycle 1: B fails COLD, A passes and starts paper trading from the newest bars
    report = _cycle(registry, _upto(history, T0), T0 + five, "cycle-1", [level4])
    assert _decisions(report) == [("DEFAULT", 1, "COLD", "advance")]
    v1 = registry.version("DEFAULT", 1)
    assert (v1["stage"], v1["status"], v1["params"]) == ("WARM", "candidate", A)
    assert v1["data_marks"] == {"BTC_USDT": T0, "ETH_USDT": T0}
    assert (v1["candidate_number"], v1["source_run_id"]) == (12, "mlflow-level-4")
    assert v1["metrics"]["window_days"] == 14.0 and v1["metrics"]["n_trades"] >= 20

    # cycle 2: two hours of new bars are not enough to judge; A waits, B is not tried again
    report = _cycle(
        registry, _upto(history, T0 + 2 * HOUR), T0 + 2 * HOUR + five, "cycle-2", [level4]
    )
    assert _decisions(report) == [
        ("DEFAULT", 1, "WARM", "wait"),
        ("DEFAULT", None, "COLD", "skip"),
    ]
    assert "window_hours not judged (2.0 of 4 h so far)" in report.rows[0].reason

    # cycle 3: 13 days later A has 24 paper trades and beats staying flat -> LIMITED
    t3 = T0 + timedelta(days=13)
    now3 = t3 + five
    report = _cycle(registry, _upto(history, t3), now3, "cycle-3", [level4])
    assert _decisions(report)[0] == ("DEFAULT", 1, "WARM", "advance")
    warm = registry.transitions("DEFAULT")[-1]
    expected = _paper(_upto(history, t3), A, {"BTC_USDT": T0, "ETH_USDT": T0})
    assert warm["metrics"]["n_trades"] == expected.n_trades == 24
    assert warm["metrics"]["sharpe"] == expected.sharpe
    assert warm["metrics"]["current_sharpe"] == 0.0  # no current version: staying flat
    payload = export_current(registry, export, "cycle-3", LimitedGateConfig())
    assert payload["regimes"]["DEFAULT"] is None
    trial = payload["limited"]["DEFAULT"]
    assert (trial["version"], trial["capital_fraction"]) == (1, 0.1)
    assert trial["judge_after"] == (now3 + timedelta(hours=24)).isoformat()

    # the trading system trades v1 with 10 % and reports 20 trades: 16 win $1, 4 lose $0.50
    live = _live_trades(1, now3 + 30 * timedelta(minutes=1), [1.0, 1.0, 1.0, -0.5, 1.0] * 4)
    # cycle 4: 12 hours in, the 24 h window is not complete
    report = _cycle(registry, _upto(history, t3), now3 + 12 * HOUR, "cycle-4", live=live)
    assert _decisions(report) == [("DEFAULT", 1, "LIMITED", "wait")]
    # cycle 5: after 25 hours -> FULL, the new current version
    now5 = now3 + 25 * HOUR
    report = _cycle(registry, _upto(history, t3), now5, "cycle-5", live=live)
    assert _decisions(report)[0] == ("DEFAULT", 1, "LIMITED", "promote")
    assert report.changes == [
        CurrentChange("DEFAULT", "promote", 1, None, report.rows[0].reason, "schedule")
    ]
    current = registry.current("DEFAULT")
    assert current is not None and current["version"] == 1 and current["stage"] == "FULL"
    assert current["stage_marks"] == watermark(_upto(history, t3))
    promote = registry.transitions("DEFAULT")[-1]
    assert (promote["metrics"]["n_trades"], promote["metrics"]["n_wins"]) == (20.0, 16.0)
    assert promote["metrics"]["pnl_usd"] == pytest.approx(14.0)
    payload = export_current(registry, export, "cycle-5", LimitedGateConfig())
    assert payload["regimes"]["DEFAULT"]["version"] == 1
    assert payload["regimes"]["DEFAULT"]["promoted_by_run"] == "cycle-5"
    assert payload["limited"]["DEFAULT"] is None

    # cycle 6: B now passes COLD and paper-trades from 2022-11-17 against the current A
    t6 = T0 + timedelta(days=16)
    report = _cycle(registry, _upto(history, t6), t6 + five, "cycle-6", [level4], live)
    assert ("DEFAULT", 2, "COLD", "advance") in _decisions(report)
    assert ("DEFAULT", 1, "FULL", "watch: wait") in _decisions(report)  # 3 trades since FULL
    assert registry.version("DEFAULT", 2)["params"] == B

    # cycle 7: B is judged on the bars after 2022-11-17, A on the very same bars
    t7 = T0 + timedelta(days=30)
    report = _cycle(registry, _upto(history, t7), t7 + five, "cycle-7", [level4], live)
    judged = next(t for t in registry.transitions("DEFAULT") if t["run_id"] == "cycle-7")
    since = watermark(_upto(history, t6))
    b_perf = _paper(_upto(history, t7), B, since)
    a_perf = _paper(_upto(history, t7), A, since)
    assert judged["version"] == 2 and judged["from_stage"] == "WARM"
    assert judged["metrics"]["sharpe"] == b_perf.sharpe
    assert judged["metrics"]["current_sharpe"] == a_perf.sharpe
    assert judged["metrics"]["current_n_trades"] == a_perf.n_trades
    # B lost on these bars: rejected at WARM with the reasons named
    assert judged["action"] == "reject" and "sharpe_vs_current" in judged["reason"]
    assert ("DEFAULT", 1, "FULL", "watch: pass") in _decisions(report)
    # a set rejected after paper trading is not tried again
    assert ("DEFAULT", None, "COLD", "skip") in _decisions(report)

    trail = registry.transitions("DEFAULT")
    assert {t["trigger"] for t in trail} == {"schedule"}
    assert [(t["action"], t["version"], t["run_id"]) for t in trail] == [
        ("advance", 1, "cycle-1"),
        ("wait", 1, "cycle-2"),
        ("advance", 1, "cycle-3"),
        ("wait", 1, "cycle-4"),
        ("promote", 1, "cycle-5"),
        ("advance", 2, "cycle-6"),
        ("reject", 2, "cycle-7"),
    ]
    assert all(t["reason"] and t["checks"] for t in trail)


def _two_versions(registry: ParameterRegistryResource, *, earlier: bool) -> None:
    if earlier:
        registry.record(
            regime="DEFAULT",
            level=4,
            params=A,
            metrics={"sharpe": 1.0},
            stage="COLD",
            promoted=True,
            reason="first",
            trigger="manual",
            run_id="r1",
        )
    registry.record(
        regime="DEFAULT",
        level=4,
        params=LOSER,
        metrics={"sharpe": 2.0},
        stage="COLD",
        promoted=True,
        reason="second",
        trigger="manual",
        run_id="r2",
    )


def _daily_loss_by_hand(history, params, since: datetime, until: datetime) -> float:
    """The worst UTC day of both instruments together, from run_engine and polars."""
    frames = []
    for symbol, frame in _upto(history, until).items():
        lo = int((frame["ts"] <= since).sum())
        warm = bars_to_segment(frame.slice(lo - 400), symbol, PPY[symbol])
        signals = STRATEGY.signals_for(warm, {"fast_window": 7.0, "slow_window": 30.0})
        run = run_engine(
            warm.slice(400, len(warm)),
            signals[400:],
            direction=Direction.BOTH,
            params=trade_params(params),
            costs=CostModel(),
        )
        equity = 10_000.0 * np.cumprod(1.0 + run.returns)
        frames.append(pl.DataFrame({"ts": frame["ts"][lo:], "pnl": np.diff(equity, prepend=1e4)}))
    daily = pl.concat(frames).group_by(pl.col("ts").dt.date()).agg(pl.col("pnl").sum())
    return float(daily["pnl"].min())


def test_a_breach_on_new_bars_rolls_back_automatically(
    history: dict[str, pl.DataFrame], tmp_path: Path
) -> None:
    registry = ParameterRegistryResource(url=f"sqlite:///{tmp_path / 'registry.db'}")
    _two_versions(registry, earlier=True)
    start, later = datetime(2022, 5, 1, tzinfo=UTC), datetime(2022, 5, 12, tzinfo=UTC)
    # the first cycle after the promotion starts the watch at the bars it knows
    report = _cycle(registry, _upto(history, start), start, "watch-1")
    assert _decisions(report) == [("DEFAULT", 2, "FULL", "watch")]
    # two days on the loss stays below $5 a day and only 5 trades closed: no breach yet
    report = _cycle(registry, _upto(history, start + timedelta(days=2)), start, "watch-2")
    assert _decisions(report) == [("DEFAULT", 2, "FULL", "watch: wait")]
    assert not report.changes
    # eleven days on, one day lost $7.90: rolled back to v1
    report = _cycle(registry, _upto(history, later), later, "watch-3")
    assert [(c.action, c.version, c.previous) for c in report.changes] == [("rollback", 1, 2)]
    current = registry.current("DEFAULT")
    assert current is not None and current["version"] == 1
    assert registry.version("DEFAULT", 2)["status"] == "rolled_back"
    rollback = registry.transitions("DEFAULT")[-1]
    assert (rollback["action"], rollback["from_version"], rollback["to_version"]) == (
        "rollback",
        2,
        1,
    )
    assert (rollback["trigger"], rollback["run_id"]) == ("automatic-rollback", "watch-3")
    by_hand = _daily_loss_by_hand(history, LOSER, start, later)
    assert by_hand == pytest.approx(-7.899, abs=1e-3)
    assert rollback["metrics"]["worst_day_pnl_usd"] == pytest.approx(by_hand, rel=1e-9)
    assert f"safety.daily_loss ${-by_hand:.2f} (too high; needs <= $5.00)" in rollback["reason"]
    failed = {c["name"] for c in rollback["checks"] if not c["passed"] and not c["waiting"]}
    assert "safety.daily_loss" in failed
    # the export follows, and the restored version's watch restarts on the next cycle
    export = tmp_path / EXPORT_FILE
    mlflow = MlflowTrackingResource(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_dir=str(tmp_path / "artifacts"),
        experiment="rollback-test",
    )
    publish_current(registry, mlflow, export, "watch-3", report.changes, LimitedGateConfig())
    exported = json.loads(export.read_text())
    assert exported["regimes"]["DEFAULT"]["version"] == 1
    # The MLflow alias follows the registry: v1 was registered and is the regime's alias now.
    restored = registry.version("DEFAULT", 1)
    assert restored["mlflow_model_version"] == mlflow.current_model_version("DEFAULT") == 1
    assert mlflow.promoted_params("DEFAULT") == restored["params"]
    (change,) = exported["changes"]
    assert (change["action"], change["version"], change["previous"]) == ("rollback", 1, 2)
    assert change["trigger"] == "automatic-rollback"
    report = _cycle(registry, _upto(history, later), later + HOUR, "watch-4")
    assert _decisions(report) == [("DEFAULT", 1, "FULL", "watch")]
    assert not report.changes


def test_a_breach_without_an_earlier_version_suspends_the_regime(
    history: dict[str, pl.DataFrame], tmp_path: Path
) -> None:
    registry = ParameterRegistryResource(url=f"sqlite:///{tmp_path / 'registry.db'}")
    _two_versions(registry, earlier=False)
    start, later = datetime(2022, 5, 1, tzinfo=UTC), datetime(2022, 5, 12, tzinfo=UTC)
    _cycle(registry, _upto(history, start), start, "watch-1")
    report = _cycle(registry, _upto(history, later), later, "watch-2")
    assert [(c.action, c.version, c.previous) for c in report.changes] == [("suspend", None, 1)]
    assert registry.current("DEFAULT") is None
    payload = export_current(registry, tmp_path / EXPORT_FILE, "watch-2", LimitedGateConfig())
    assert payload["regimes"]["DEFAULT"] is None


def test_a_breach_in_live_results_rolls_back_automatically(
    history: dict[str, pl.DataFrame], tmp_path: Path
) -> None:
    registry = ParameterRegistryResource(url=f"sqlite:///{tmp_path / 'registry.db'}")
    _two_versions(registry, earlier=True)
    promoted_at = registry.version("DEFAULT", 2)["stage_entered_at"]
    bars = _upto(history, datetime(2022, 5, 1, tzinfo=UTC))
    # the trading system reports one trade of v2 that lost $6
    live = _live_trades(2, promoted_at + timedelta(minutes=10), [-6.0])
    report = _cycle(registry, bars, promoted_at + 5 * HOUR, "live-1", live=live)
    assert [(c.action, c.version) for c in report.changes] == [("rollback", 1)]
    rollback = registry.transitions("DEFAULT")[-1]
    assert rollback["trigger"] == "automatic-rollback"
    assert "its live results" in rollback["reason"]
    assert "safety.daily_loss $6.00 (too high; needs <= $5.00)" in rollback["reason"]
    assert rollback["metrics"]["live_worst_day_pnl_usd"] == -6.0
    failed = {c["name"] for c in rollback["checks"] if not c["passed"] and not c["waiting"]}
    assert failed == {"live_safety.daily_loss"}


def _seed_registry(settings: Settings) -> ParameterRegistryResource:
    registry = ParameterRegistryResource(url=settings.registry_url)
    for x, promoted in ((1.0, True), (2.0, True), (3.0, False)):
        registry.record(
            regime="BULL",
            level=1,
            params={"x": x},
            metrics={"sharpe": x},
            stage="COLD",
            promoted=promoted,
            reason=f"v{x}",
            trigger="schedule",
            run_id="seed",
        )
    return registry


def test_manual_rollback_job(tiny_settings: Settings) -> None:
    registry = _seed_registry(tiny_settings)
    job = build_definitions(tiny_settings).resolve_job_def("rollback_job")
    reason = "operator: slippage on the exchange"
    result = job.execute_in_process(
        run_config={
            "ops": {"rollback_parameters": {"config": {"regime": "BULL", "reason": reason}}}
        }
    )
    assert result.success
    assert result.output_for_node("rollback_parameters") == 1
    current = registry.current("BULL")
    assert current is not None and current["version"] == 1
    rollback = registry.transitions("BULL")[-1]
    assert (rollback["action"], rollback["from_version"], rollback["to_version"]) == (
        "rollback",
        2,
        1,
    )
    assert (rollback["trigger"], rollback["run_id"], rollback["reason"]) == (
        "manual",
        result.run_id,
        reason,
    )
    exported = json.loads((tiny_settings.export_dir / EXPORT_FILE).read_text())
    assert exported["dagster_run_id"] == result.run_id
    assert exported["regimes"]["BULL"]["version"] == 1
    assert exported["regimes"]["BEAR"] is None
    assert exported["changes"] == [
        {
            "regime": "BULL",
            "action": "rollback",
            "version": 1,
            "previous": 2,
            "reason": reason,
            "trigger": "manual",
        }
    ]
    (event,) = result.asset_materializations_for_node("rollback_parameters")
    assert event.asset_key == AssetKey("promoted_parameters")

    # back to v2 by name; a version that never passed the gates cannot be restored
    result = job.execute_in_process(
        run_config={
            "ops": {
                "rollback_parameters": {
                    "config": {"regime": "BULL", "reason": "v2 was fine", "to_version": 2}
                }
            }
        }
    )
    assert result.output_for_node("rollback_parameters") == 2
    failed = job.execute_in_process(
        run_config={
            "ops": {
                "rollback_parameters": {
                    "config": {"regime": "BULL", "reason": "try v3", "to_version": 3}
                }
            }
        },
        raise_on_error=False,
    )
    assert not failed.success
    current = registry.current("BULL")
    assert current is not None and current["version"] == 2


def _seed_warehouse(settings: Settings, history: dict[str, pl.DataFrame]) -> None:
    warehouse = WarehouseResource(path=str(settings.warehouse_path))
    for symbol, frame in _upto(history, T0).items():
        warehouse.replace_window(
            "validated_bars", symbol, datetime(2000, 1, 1, tzinfo=UTC), T0 + HOUR, frame
        )
    for level, params in ((1, A), (2, B), (4, A)):
        candidate = {"number": 3, "params": params, "validation": {"sharpe": 2.0}}
        result = {"level": level, "candidates": [candidate], "mlflow_run_id": f"mlflow-{level}"}
        warehouse.save_level_result(level, f"level_{level}", "run", result)


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
    assert {t["regime"] for t in trail} == {"BULL", "BEAR", "SIDEWAYS", "DEFAULT"}
    assert {(t["trigger"], t["run_id"]) for t in trail} == {("schedule", result.run_id)}
    # the level-4 set passes COLD for both regimes it serves and waits in WARM
    for regime in ("SIDEWAYS", "DEFAULT"):
        (flying,) = registry.in_flight(regime)
        assert (flying["stage"], flying["source_run_id"]) == ("WARM", "mlflow-4")
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
    _live_trades(1, start, [1.0, -1.0]).write_parquet(folder / "day1.parquet")
    _live_trades(1, start, [1.0, -1.0]).write_parquet(folder / "day1-again.parquet")
    csv = _live_trades(2, start, [3.0], regime="BEAR").with_columns(
        pl.col("opened_at", "closed_at").dt.replace_time_zone(None)
    )
    csv.write_csv(folder / "bear.csv")
    (folder / "day2.parquet.tmp").write_text("being written")  # not a results file yet
    frame = read_live_results(folder)
    assert frame.height == 3
    assert frame.schema == pl.Schema(LIVE_RESULT_COLUMNS)
    assert frame.filter(pl.col("regime") == "BEAR")["closed_at"][0] == start
