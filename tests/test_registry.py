"""The parameter registry on a real SQLite database: versions, stage transitions with their
audit trail, rollback, suspension, and the upgrade of a registry written by an older release."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from ffe_dagster.core.backtest.reference import Direction
from ffe_dagster.core.promotion.checks import GateCheck
from ffe_dagster.core.promotion.config import LimitedGateConfig, Stage
from ffe_dagster.core.promotion.records import (
    Action,
    ParameterVersion,
    RegimeAction,
    Transition,
    Trigger,
    VersionStatus,
)
from ffe_dagster.promotion.export import export_current
from ffe_dagster.resources.registry import ParameterRegistryResource

T0 = datetime(2024, 3, 1, 12, tzinfo=UTC)
MARKS = {"BTC_USDT": datetime(2024, 3, 1, 11, tzinfo=UTC)}
CHECKS = [{"name": "sharpe", "value": 1.2, "threshold": 0.5, "passed": True, "reason": "ok"}]


def _registry(tmp_path: Path) -> ParameterRegistryResource:
    return ParameterRegistryResource(url=f"sqlite:///{tmp_path / 'r.db'}")


def _record(registry: ParameterRegistryResource, x: float, promoted: bool) -> int:
    return registry.record(
        regime="BULL",
        level=1,
        params={"x": x},
        metrics={"sharpe": x},
        stage=Stage.COLD,
        promoted=promoted,
        reason=f"because {x}",
        trigger="manual",
        run_id="run",
    )


def _candidate(registry: ParameterRegistryResource, x: float, passed: bool = True) -> int:
    return registry.add_candidate(
        regime="BEAR",
        level=2,
        direction="short",
        params={"x": x},
        metrics={"sharpe": x, "n_trades": 25.0},
        passed=passed,
        reason="COLD passed" if passed else "COLD failed: sharpe",
        checks=CHECKS,
        trigger="schedule",
        run_id="run-1",
        data_marks=MARKS,
        source_run_id="mlflow-run",
        candidate_number=7,
        at=T0,
    )


def test_versions_transitions_and_rollback(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    assert registry.current("BULL") is None
    assert _record(registry, 1.0, True) == 1
    assert _record(registry, 2.0, False) == 2  # rejected: the current version stays
    current = registry.current("BULL")
    assert current is not None and current.version == 1
    assert _record(registry, 3.0, True) == 3
    current = registry.current("BULL")
    assert current is not None and current.params == {"x": 3.0}
    assert registry.rollback("BULL", reason="breach", trigger="manual", run_id="r2") == 1
    current = registry.current("BULL")
    assert current is not None and current.version == 1
    statuses = [v.status for v in registry.history("BULL")]
    assert statuses == [
        VersionStatus.CURRENT,
        VersionStatus.REJECTED,
        VersionStatus.ROLLED_BACK,
    ]
    actions = [(t.action, t.from_version, t.to_version) for t in registry.transitions()]
    assert actions == [
        (Action.PROMOTE, None, 1),
        (Action.REJECT, 1, 1),
        (Action.PROMOTE, 1, 3),
        (Action.ROLLBACK, 3, 1),
    ]
    with pytest.raises(ValueError, match="no earlier promoted version"):
        registry.rollback("BULL", reason="again", trigger="manual", run_id=None)


def test_a_candidate_climbs_every_stage_with_its_audit_trail(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    assert _candidate(registry, 1.0) == 1
    (flying,) = registry.in_flight("BEAR")
    assert (flying.stage, flying.status, flying.direction) == (
        Stage.WARM,
        VersionStatus.CANDIDATE,
        Direction.SHORT,
    )
    assert flying.data_marks == MARKS and flying.stage_entered_at == T0
    assert (flying.source_run_id, flying.candidate_number) == ("mlflow-run", 7)
    registry.wait(
        regime="BEAR",
        version=1,
        reason="WARM waiting: 3 trades",
        metrics={"n_trades": 3.0},
        checks=CHECKS,
        trigger="schedule",
        run_id="run-2",
        at=T0 + timedelta(hours=6),
    )
    registry.advance(
        regime="BEAR",
        version=1,
        to_stage=Stage.LIMITED,
        reason="WARM passed",
        metrics={"sharpe": 1.3},
        checks=CHECKS,
        trigger="sensor",
        run_id="run-3",
        at=T0 + timedelta(hours=12),
    )
    assert registry.current("BEAR") is None  # LIMITED is not current yet
    registry.advance(
        regime="BEAR",
        version=1,
        to_stage=Stage.FULL,
        reason="LIMITED passed",
        metrics={"sharpe": 1.4},
        checks=CHECKS,
        trigger="schedule",
        run_id="run-4",
        data_marks={"BTC_USDT": datetime(2024, 3, 3, tzinfo=UTC)},
        at=T0 + timedelta(hours=40),
    )
    current = registry.current("BEAR")
    assert current is not None
    assert (current.version, current.stage, current.stage_run_id) == (1, Stage.FULL, "run-4")
    assert current.stage_marks == {"BTC_USDT": datetime(2024, 3, 3, tzinfo=UTC)}
    assert current.metrics == {"sharpe": 1.0, "n_trades": 25.0}  # the COLD metrics stay
    assert current.stage_metrics == {"sharpe": 1.4}
    assert registry.in_flight("BEAR") == []
    trail = [
        (t.action, t.version, t.from_stage, t.to_stage, t.trigger, t.run_id)
        for t in registry.transitions("BEAR")
    ]
    assert trail == [
        (Action.ADVANCE, 1, Stage.COLD, Stage.WARM, Trigger.SCHEDULE, "run-1"),
        (Action.WAIT, 1, Stage.WARM, Stage.WARM, Trigger.SCHEDULE, "run-2"),
        (Action.ADVANCE, 1, Stage.WARM, Stage.LIMITED, Trigger.SENSOR, "run-3"),
        (Action.PROMOTE, 1, Stage.LIMITED, Stage.FULL, Trigger.SCHEDULE, "run-4"),
    ]
    last = registry.transitions("BEAR")[-1]
    assert last.metrics == {"sharpe": 1.4} and last.checks == (
        GateCheck("sharpe", 1.2, 0.5, True, "ok"),
    )
    assert (last.from_version, last.to_version) == (None, 1)
    assert last.at == T0 + timedelta(hours=40)


def test_rejections_and_impossible_moves(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    assert _candidate(registry, 0.1, passed=False) == 1
    rejected = registry.version("BEAR", 1)
    assert (rejected.stage, rejected.status) == (Stage.COLD, VersionStatus.REJECTED)
    assert registry.in_flight("BEAR") == []
    kwargs = {
        "regime": "BEAR",
        "reason": "r",
        "metrics": {},
        "checks": [],
        "trigger": "schedule",
        "run_id": None,
    }
    with pytest.raises(ValueError, match="not in flight"):
        registry.advance(version=1, to_stage=Stage.LIMITED, **kwargs)
    assert _candidate(registry, 1.0) == 2
    with pytest.raises(ValueError, match="at WARM cannot move to FULL"):
        registry.advance(version=2, to_stage=Stage.FULL, **kwargs)
    registry.reject(version=2, **{**kwargs, "reason": "WARM failed: drawdown"})
    assert registry.version("BEAR", 2).status is VersionStatus.REJECTED
    assert registry.version("BEAR", 2).reason == "WARM failed: drawdown"
    with pytest.raises(ValueError, match="trigger must be one of"):
        registry.wait(version=2, **{**kwargs, "trigger": "cron"})
    with pytest.raises(KeyError):
        registry.version("BEAR", 9)


def test_rollback_to_a_chosen_version_and_suspension(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    for x in (1.0, 2.0, 3.0):
        _record(registry, x, True)
    assert _record(registry, 4.0, False) == 4
    with pytest.raises(ValueError, match="v4 was never promoted"):
        registry.rollback("BULL", reason="r", trigger="manual", run_id=None, to_version=4)
    with pytest.raises(ValueError, match="v3 is already current"):
        registry.rollback("BULL", reason="r", trigger="manual", run_id=None, to_version=3)
    restored = registry.rollback(
        "BULL", reason="operator", trigger="manual", run_id="job-1", to_version=1
    )
    assert restored == 1
    current = registry.current("BULL")
    assert current is not None and current.stage_marks is None  # the watch starts afresh
    registry.start_watch("BULL", 1, MARKS)
    assert registry.version("BULL", 1).stage_marks == MARKS
    with pytest.raises(ValueError, match="not the current version"):
        registry.start_watch("BULL", 2, MARKS)
    assert (
        registry.suspend("BULL", reason="breach", trigger="automatic-rollback", run_id="run-9") == 1
    )
    assert registry.current("BULL") is None
    statuses = {v.version: v.status for v in registry.history("BULL")}
    assert statuses == {
        1: VersionStatus.ROLLED_BACK,
        2: VersionStatus.SUPERSEDED,
        3: VersionStatus.ROLLED_BACK,
        4: VersionStatus.REJECTED,
    }
    suspend = registry.transitions("BULL")[-1]
    assert (suspend.action, suspend.from_version, suspend.to_version) == (
        Action.SUSPEND,
        1,
        None,
    )
    assert suspend.trigger is Trigger.AUTOMATIC_ROLLBACK
    with pytest.raises(ValueError, match="no current version to suspend"):
        registry.suspend("BULL", reason="again", trigger="manual", run_id=None)
    # with nothing current, a manual rollback restores the newest superseded version
    assert registry.rollback("BULL", reason="back", trigger="manual", run_id=None) == 2


def test_mlflow_model_version_follows_a_version(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    _record(registry, 1.0, True)
    assert registry.version("BULL", 1).mlflow_model_version is None
    registry.set_mlflow_model_version("BULL", 1, 5)
    assert registry.version("BULL", 1).mlflow_model_version == 5
    with pytest.raises(KeyError):
        registry.set_mlflow_model_version("BULL", 2, 6)


def test_a_registry_of_the_first_schema_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as con:
        con.execute(
            sa.text(
                "CREATE TABLE parameter_versions (id INTEGER PRIMARY KEY, regime VARCHAR(16) "
                "NOT NULL, version INTEGER NOT NULL, level INTEGER NOT NULL, params TEXT NOT "
                "NULL, metrics TEXT NOT NULL, stage VARCHAR(16) NOT NULL, status VARCHAR(16) NOT "
                "NULL, reason TEXT NOT NULL, trigger VARCHAR(32) NOT NULL, run_id VARCHAR(64), "
                "created_at DATETIME NOT NULL, UNIQUE (regime, version))"
            )
        )
        con.execute(
            sa.text(
                "CREATE TABLE parameter_transitions (id INTEGER PRIMARY KEY, regime VARCHAR(16) "
                "NOT NULL, from_version INTEGER, to_version INTEGER, action VARCHAR(16) NOT NULL, "
                "reason TEXT NOT NULL, trigger VARCHAR(32) NOT NULL, run_id VARCHAR(64), "
                "at DATETIME NOT NULL)"
            )
        )
        con.execute(
            sa.text(
                "INSERT INTO parameter_versions VALUES (1, 'SIDEWAYS', 1, 4, '{\"x\": 1}', "
                "'{\"sharpe\": 1.3}', 'COLD', 'current', 'COLD passed', 'manual', 'old-run', "
                "'2026-01-01 00:00:00.000000')"
            )
        )
    engine.dispose()
    registry = ParameterRegistryResource(url=f"sqlite:///{path}")
    current = registry.current("SIDEWAYS")
    assert current is not None
    assert current.params == {"x": 1} and current.metrics == {"sharpe": 1.3}
    assert current.created_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert current.direction is None and current.stage_marks is None
    payload = export_current(registry, tmp_path / "export.json", "run", LimitedGateConfig())
    assert payload["regimes"]["SIDEWAYS"]["promoted_at"] == "2026-01-01T00:00:00+00:00"
    assert payload["regimes"]["SIDEWAYS"]["promoted_by_run"] == "old-run"
    registry.start_watch("SIDEWAYS", 1, MARKS)
    assert registry.suspend("SIDEWAYS", reason="r", trigger="manual", run_id=None) == 1
    assert registry.transitions("SIDEWAYS")[-1].action is Action.SUSPEND


def test_the_stored_strings_are_unchanged_and_read_back_as_enums(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    _candidate(registry, 1.0)
    registry.note_decision(
        regime="BEAR",
        level=2,
        stage=Stage.COLD,
        action=RegimeAction.SKIP,
        reason="v1 at WARM in flight; new candidates wait",
        trigger=Trigger.SCHEDULE,
        run_id="run-1",
        at=T0,
    )
    engine = sa.create_engine(registry.url)
    with engine.begin() as con:
        queries = (
            "SELECT stage, status, trigger, direction FROM parameter_versions",
            "SELECT action, from_stage, to_stage, trigger FROM parameter_transitions",
            "SELECT stage, action, trigger FROM regime_decisions",
        )
        stored = tuple(tuple(con.execute(sa.text(q)).one()) for q in queries)
        # What an older release wrote, as plain strings: an automatic rollback and a block.
        con.execute(
            sa.text(
                "INSERT INTO parameter_transitions (regime, version, from_version, to_version, "
                "action, from_stage, to_stage, reason, trigger, run_id, at, metrics, checks) "
                "VALUES ('BEAR', 1, 1, NULL, 'suspend', 'FULL', 'FULL', 'breach', "
                "'automatic-rollback', 'old', '2025-06-01 00:00:00.000000', "
                "'{\"sharpe\": -0.5}', "
                '\'[{"name": "sharpe", "value": -0.5, "threshold": 0.0, '
                '"passed": false, "reason": "too low"}]\')'
            )
        )
        con.execute(
            sa.text(
                "INSERT INTO regime_decisions (regime, level, stage, action, reason, trigger, "
                "run_id, at) VALUES ('BULL', 1, 'COLD', 'blocked', 'level 1 did not pass', "
                "'manual', 'old', '2025-06-01 00:00:00.000000')"
            )
        )
    engine.dispose()
    # the stored values are the very strings of the first schema, not enum reprs
    assert stored == (
        ("WARM", "candidate", "schedule", "short"),
        ("advance", "COLD", "WARM", "schedule"),
        ("COLD", "skip", "schedule"),
    )
    assert all(type(value) is str for row in stored for value in row)

    (version,) = registry.history("BEAR")
    assert isinstance(version, ParameterVersion)
    assert (version.stage, version.status, version.trigger) == (
        Stage.WARM,
        VersionStatus.CANDIDATE,
        Trigger.SCHEDULE,
    )
    old = registry.transitions("BEAR")[-1]
    assert isinstance(old, Transition)
    assert (old.action, old.from_stage, old.trigger) == (
        Action.SUSPEND,
        Stage.FULL,
        Trigger.AUTOMATIC_ROLLBACK,
    )
    assert old.at == datetime(2025, 6, 1, tzinfo=UTC) and old.metrics == {"sharpe": -0.5}
    # a check stored before ``waiting`` existed reads back as not waiting
    assert old.checks == (GateCheck("sharpe", -0.5, 0.0, False, "too low", waiting=False),)
    (blocked,) = registry.regime_decisions("BULL")
    assert (blocked.action, blocked.stage, blocked.trigger) == (
        RegimeAction.BLOCKED,
        Stage.COLD,
        Trigger.MANUAL,
    )
    # to_json gives the stored strings back, JSON-ready
    assert json.loads(json.dumps(old.to_json()))["checks"][0]["waiting"] is False
    assert version.to_json()["stage"] == "WARM" and version.to_json()["data_marks"] == {
        "BTC_USDT": "2024-03-01T11:00:00+00:00"
    }
    assert blocked.to_json() == {
        "id": blocked.id,
        "regime": "BULL",
        "level": 1,
        "stage": "COLD",
        "action": "blocked",
        "reason": "level 1 did not pass",
        "trigger": "manual",
        "run_id": "old",
        "at": "2025-06-01T00:00:00+00:00",
    }
