"""Rollback on real bars with a real SQLite registry: automatic rollback (and suspension) on a
safety breach seen on new bars or in live results, and the manual rollback job run by Dagster.

Bars arrive cycle by cycle by cutting the bundled hourly BTC/USDT and ETH/USDT history of 2022
at later and later instants; "now" moves with them."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from dagster import AssetKey

from ffe_dagster.config.settings import Settings
from ffe_dagster.core.backtest.reference import CostModel, Direction, run_engine
from ffe_dagster.core.promotion.config import LimitedGateConfig, Stage
from ffe_dagster.core.promotion.records import Action, Trigger, VersionStatus
from ffe_dagster.core.study.evaluation import trade_params
from ffe_dagster.core.study.level_specs import bars_to_segment
from ffe_dagster.definitions import EXPORT_FILE, build_definitions
from ffe_dagster.promotion.export import export_current, publish_current
from ffe_dagster.resources.registry import ParameterRegistryResource
from ffe_dagster.resources.tracking import MlflowTrackingResource
from tests.promotion_cycle_helpers import (
    HOUR,
    LOSER,
    PPY,
    STRATEGY,
    A,
    decisions,
    live_trades,
    load_history,
    run_cycle,
    upto,
)


@pytest.fixture(scope="module")
def history() -> dict[str, pl.DataFrame]:
    return load_history()


def _two_versions(registry: ParameterRegistryResource, *, earlier: bool) -> None:
    if earlier:
        registry.record(
            regime="DEFAULT",
            level=4,
            params=A,
            metrics={"sharpe": 1.0},
            stage=Stage.COLD,
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
        stage=Stage.COLD,
        promoted=True,
        reason="second",
        trigger="manual",
        run_id="r2",
    )


def _daily_loss_by_hand(history, params, since: datetime, until: datetime) -> float:
    """The worst UTC day of both instruments together, from run_engine and polars."""
    frames = []
    for symbol, frame in upto(history, until).items():
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
    report = run_cycle(registry, upto(history, start), start, "watch-1")
    assert decisions(report) == [("DEFAULT", 2, Stage.FULL, "watch")]
    # two days on the loss stays below $5 a day and only 5 trades closed: no breach yet
    report = run_cycle(registry, upto(history, start + timedelta(days=2)), start, "watch-2")
    assert decisions(report) == [("DEFAULT", 2, Stage.FULL, "watch: wait")]
    assert not report.changes
    # eleven days on, one day lost $7.90: rolled back to v1
    report = run_cycle(registry, upto(history, later), later, "watch-3")
    assert [(c.action, c.version, c.previous) for c in report.changes] == [(Action.ROLLBACK, 1, 2)]
    current = registry.current("DEFAULT")
    assert current is not None and current.version == 1
    assert registry.version("DEFAULT", 2).status == VersionStatus.ROLLED_BACK
    rollback = registry.transitions("DEFAULT")[-1]
    assert (rollback.action, rollback.from_version, rollback.to_version) == (
        Action.ROLLBACK,
        2,
        1,
    )
    assert (rollback.trigger, rollback.run_id) == ("automatic-rollback", "watch-3")
    by_hand = _daily_loss_by_hand(history, LOSER, start, later)
    assert by_hand == pytest.approx(-7.899, abs=1e-3)
    assert rollback.metrics["worst_day_pnl_usd"] == pytest.approx(by_hand, rel=1e-9)
    assert f"safety.daily_loss ${-by_hand:.2f} (too high; needs <= $5.00)" in rollback.reason
    failed = {c.name for c in rollback.checks if not c.passed and not c.waiting}
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
    assert restored.mlflow_model_version == mlflow.current_model_version("DEFAULT") == 1
    assert mlflow.promoted_params("DEFAULT") == restored.params
    (change,) = exported["changes"]
    assert (change["action"], change["version"], change["previous"]) == (Action.ROLLBACK, 1, 2)
    assert change["trigger"] == "automatic-rollback"
    report = run_cycle(registry, upto(history, later), later + HOUR, "watch-4")
    assert decisions(report) == [("DEFAULT", 1, Stage.FULL, "watch")]
    assert not report.changes


def test_a_breach_without_an_earlier_version_suspends_the_regime(
    history: dict[str, pl.DataFrame], tmp_path: Path
) -> None:
    registry = ParameterRegistryResource(url=f"sqlite:///{tmp_path / 'registry.db'}")
    _two_versions(registry, earlier=False)
    start, later = datetime(2022, 5, 1, tzinfo=UTC), datetime(2022, 5, 12, tzinfo=UTC)
    run_cycle(registry, upto(history, start), start, "watch-1")
    report = run_cycle(registry, upto(history, later), later, "watch-2")
    assert [(c.action, c.version, c.previous) for c in report.changes] == [
        (Action.SUSPEND, None, 1)
    ]
    assert registry.current("DEFAULT") is None
    payload = export_current(registry, tmp_path / EXPORT_FILE, "watch-2", LimitedGateConfig())
    assert payload["regimes"]["DEFAULT"] is None


def test_a_breach_in_live_results_rolls_back_automatically(
    history: dict[str, pl.DataFrame], tmp_path: Path
) -> None:
    registry = ParameterRegistryResource(url=f"sqlite:///{tmp_path / 'registry.db'}")
    _two_versions(registry, earlier=True)
    promoted_at = registry.version("DEFAULT", 2).since
    bars = upto(history, datetime(2022, 5, 1, tzinfo=UTC))
    # the trading system reports one trade of v2 that lost $6
    live = live_trades(2, promoted_at + timedelta(minutes=10), [-6.0])
    report = run_cycle(registry, bars, promoted_at + 5 * HOUR, "live-1", live=live)
    assert [(c.action, c.version) for c in report.changes] == [(Action.ROLLBACK, 1)]
    rollback = registry.transitions("DEFAULT")[-1]
    assert rollback.trigger is Trigger.AUTOMATIC_ROLLBACK
    assert "its live results" in rollback.reason
    assert "safety.daily_loss $6.00 (too high; needs <= $5.00)" in rollback.reason
    assert rollback.metrics["live_worst_day_pnl_usd"] == -6.0
    failed = {c.name for c in rollback.checks if not c.passed and not c.waiting}
    assert failed == {"live_safety.daily_loss"}


def _seed_registry(settings: Settings) -> ParameterRegistryResource:
    registry = ParameterRegistryResource(url=settings.registry_url)
    for x, promoted in ((1.0, True), (2.0, True), (3.0, False)):
        registry.record(
            regime="BULL",
            level=1,
            params={"x": x},
            metrics={"sharpe": x},
            stage=Stage.COLD,
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
    assert current is not None and current.version == 1
    rollback = registry.transitions("BULL")[-1]
    assert (rollback.action, rollback.from_version, rollback.to_version) == (
        Action.ROLLBACK,
        2,
        1,
    )
    assert (rollback.trigger, rollback.run_id, rollback.reason) == (
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
    assert current is not None and current.version == 2
