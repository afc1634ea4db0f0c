"""Each decision that matters produces its notification, with the right content, delivered to a
real local HTTP receiver: promote (WARM, LIMITED, FULL), reject, rollback (automatic and
manual), suspend, a level verdict change, and the pure pieces behind them (diff, text, backoff)."""

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ffe_dagster.core.promotion.checks import GateCheck, GateDecision, at_least, at_most
from ffe_dagster.core.promotion.config import Outcome, Stage
from ffe_dagster.core.reporting.notifications import (
    Kind,
    ParamChange,
    UiLinks,
    param_changes,
    retry_delay_s,
    verdict_change,
)
from ffe_dagster.resources.registry import ParameterRegistryResource
from ffe_dagster.resources.warehouse import WarehouseResource
from ffe_dagster.resources.webhook import WebhookResource
from ffe_dagster.sensors.notify import DeliveryPolicy, deliver_due
from tests.fakes.receiver import SECRET, WebhookReceiver
from tests.level_rows import level_row

LINKS = UiLinks(dagster="http://dagster.test:3000/", mlflow="http://mlflow.test:5000")
P1 = {"fast_window": 10, "slow_window": 29, "stop_loss_pct": 1.2}
P2 = {"fast_window": 10, "slow_window": 29, "stop_loss_pct": 1.5}
AT = datetime(2026, 3, 2, 6, tzinfo=UTC)
MARKS = {"BTC_USDT": AT}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()


def _dicts(*checks: GateCheck) -> list[dict[str, object]]:
    """Checks as the audit trail stores them."""
    decision = GateDecision(Stage.COLD, Outcome.FAIL, "", {}, checks)
    return decision.checks_as_dicts()


def _registry(tmp_path: Path) -> ParameterRegistryResource:
    return ParameterRegistryResource(url=f"sqlite:///{tmp_path / 'registry.db'}")


def _deliver(registry: ParameterRegistryResource, receiver: WebhookReceiver) -> list[dict]:
    start = len(receiver.received)
    result = deliver_due(
        registry.outbox(),
        WebhookResource(url=receiver.url),
        LINKS,
        datetime.now(UTC),
        DeliveryPolicy(),
    )
    assert result.error is None
    return [r.json for r in receiver.received[start:]]


def _candidate(registry: ParameterRegistryResource, params: dict, passed: bool, checks=()) -> int:
    return registry.add_candidate(
        regime="BULL",
        level=1,
        direction="long",
        params=params,
        metrics={"sharpe": 0.9},
        passed=passed,
        reason="COLD passed on the last 14 days" if passed else "COLD failed",
        checks=_dicts(*checks),
        trigger="schedule",
        run_id="run-2",
        data_marks=MARKS,
        source_run_id="mlflow-7",
        candidate_number=4,
        at=AT,
    )


def test_promotions_to_warm_limited_and_full_are_announced(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    registry = _registry(tmp_path)
    registry.record(
        regime="BULL",
        level=1,
        params=P1,
        metrics={"sharpe": 1.0},
        stage=Stage.FULL,
        promoted=True,
        reason="imported",
        trigger="manual",
        run_id="run-1",
    )
    version = _candidate(registry, P2, passed=True)
    registry.advance(
        regime="BULL",
        version=version,
        to_stage=Stage.LIMITED,
        reason="WARM passed on paper trading",
        metrics={"sharpe": 1.3, "current_sharpe": 1.1},
        checks=[],
        trigger="schedule",
        run_id="run-3",
        at=AT,
    )
    registry.advance(
        regime="BULL",
        version=version,
        to_stage=Stage.FULL,
        reason="LIMITED passed on its live results",
        metrics={"sharpe": 1.40, "current_sharpe": 1.17},
        checks=_dicts(at_least("sharpe_vs_current", 1.40, 1.3455)),
        trigger="schedule",
        run_id="run-4",
        data_marks=MARKS,
        at=AT,
    )
    imported, warm, limited, full = _deliver(registry, receiver)
    assert imported["kind"] == "promote" and imported["version_before"] is None
    assert warm["text"] == (
        "Parameter Optimization Complete — Regime: BULL — v2 COLD → WARM — "
        "stop_loss_pct (1.2 → 1.5) — PROMOTED TO WARM"
    )
    assert (warm["level"], warm["version_before"], warm["version_after"]) == (1, 1, 1)
    assert warm["links"] == {
        "dagster_run": "http://dagster.test:3000/runs/run-2",
        "mlflow_run": "http://mlflow.test:5000/#/runs/mlflow-7",
    }
    assert limited["to_stage"] == Stage.LIMITED and "Sharpe improvement +0.20" in limited["text"]
    # 1.40 - 1.17 = 0.23
    assert full["text"] == (
        "Parameter Optimization Complete — Regime: BULL — v2 LIMITED → FULL — "
        "stop_loss_pct (1.2 → 1.5) — Sharpe improvement +0.23 — PROMOTED TO FULL"
    )
    assert full["schema"] == "ffe.notification/1"
    assert (full["version_before"], full["version_after"]) == (1, 2)
    assert full["changes"] == [{"name": "stop_loss_pct", "old": 1.2, "new": 1.5}]
    assert full["checks"] == [
        {
            "name": "sharpe_vs_current",
            "value": 1.40,
            "limit": 1.3455,
            "passed": True,
            "reason": "sharpe_vs_current 1.4 (ok; needs >= 1.3455)",
        }
    ]
    assert (full["trigger"], full["run_id"]) == ("schedule", "run-4")
    assert full["details"]["sharpe"]["improvement"] == pytest.approx(0.23)
    assert len({n["key"] for n in (imported, warm, limited, full)}) == 4
    assert all(SECRET not in str(n) for n in (imported, warm, limited, full))


def test_a_rejection_names_the_failed_checks_and_keeps_the_current_set(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    registry = _registry(tmp_path)
    checks = (at_least("sharpe", 0.31, 0.5), at_least("trades", 25.0, 20.0))
    version = _candidate(registry, P2, passed=False, checks=checks)
    (rejected,) = _deliver(registry, receiver)
    assert rejected["kind"] == "reject" and rejected["version"] == version
    assert rejected["text"] == (
        "Parameter Optimization Rejected — Regime: BULL — v1 at COLD — "
        "Reason: sharpe 0.31 (too low; needs >= 0.5) — Keeping current parameters (none)"
    )
    assert [(c["name"], c["passed"]) for c in rejected["checks"]] == [
        ("sharpe", False),
        ("trades", True),
    ]
    # what was proposed, against nothing current
    assert {c["name"] for c in rejected["changes"]} == set(P2)


def _two_promoted(registry: ParameterRegistryResource) -> None:
    for params, run in ((P1, "run-1"), (P2, "run-2")):
        registry.record(
            regime="BULL",
            level=1,
            params=params,
            metrics={"sharpe": 1.0},
            stage=Stage.FULL,
            promoted=True,
            reason="imported",
            trigger="manual",
            run_id=run,
        )


def test_automatic_and_manual_rollbacks_and_a_suspension_are_announced(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    registry = _registry(tmp_path)
    _two_promoted(registry)
    breach = at_most("safety.daily_loss", 7.5, 5.0, "$")
    registry.rollback(
        "BULL",
        reason="safety breach: daily loss",
        trigger="automatic-rollback",
        run_id="run-5",
        metrics={"daily_loss_usd": 7.5},
        checks=_dicts(breach),
        at=AT,
    )
    registry.rollback(
        "BULL", reason="operator: v2 back", trigger="manual", run_id="run-6", to_version=2
    )
    registry.suspend(
        "BULL", reason="safety breach, nothing to return to", trigger="manual", run_id="run-7"
    )
    notes = _deliver(registry, receiver)
    automatic, manual, suspended = notes[-3:]
    assert automatic["text"] == (
        "Parameter Rollback Triggered — Regime: BULL — safety.daily_loss $7.50 (too high; "
        "needs <= $5.00) — Reverted v2 → v1 (automatic-rollback)"
    )
    assert automatic["changes"] == [{"name": "stop_loss_pct", "old": 1.5, "new": 1.2}]
    assert automatic["checks"][0]["value"] == 7.5 and automatic["checks"][0]["limit"] == 5.0
    assert manual["text"] == (
        "Parameter Rollback Triggered — Regime: BULL — operator: v2 back — "
        "Reverted v1 → v2 (manual)"
    )
    assert suspended["kind"] == "suspend"
    assert (suspended["version_before"], suspended["version_after"]) == (2, None)
    assert suspended["text"] == (
        "Parameters Suspended — Regime: BULL — safety breach, nothing to return to — "
        "v2 taken back; no earlier version to restore"
    )
    assert {c["new"] for c in suspended["changes"]} == {None}


def test_a_wait_is_not_announced(tmp_path: Path, receiver: WebhookReceiver) -> None:
    registry = _registry(tmp_path)
    version = _candidate(registry, P2, passed=True)
    registry.wait(
        regime="BULL",
        version=version,
        reason="WARM waiting",
        metrics={},
        checks=[],
        trigger="schedule",
        run_id="run-3",
    )
    assert [n["kind"] for n in _deliver(registry, receiver)] == ["promote"]


def test_a_level_verdict_change_is_announced_once(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    from ffe_dagster.config import load_curriculum
    from ffe_dagster.config.settings import PACKAGE_DIR
    from ffe_dagster.promotion.verdicts import announce_verdict_changes

    curriculum = load_curriculum(PACKAGE_DIR / "config" / "curriculum.yaml")
    registry = _registry(tmp_path)
    warehouse = WarehouseResource(path=str(tmp_path / "warehouse.duckdb"))
    passed = {"level": 2, "passed": True, "criteria": [], "mlflow_run_id": "mlflow-a"}
    failed = {
        "level": 2,
        "passed": False,
        "mlflow_run_id": "mlflow-b",
        "criteria": [
            {"name": "sharpe", "threshold": 0.5, "value": 0.3, "passed": False},
            {"name": "trades", "threshold": 20, "value": 31, "passed": True},
        ],
    }
    warehouse.save_level_result(2, "level_2", "run-a", level_row(passed))
    assert announce_verdict_changes(registry, warehouse, curriculum, AT) == []
    warehouse.save_level_result(2, "level_2", "run-b", level_row(failed))
    (note,) = announce_verdict_changes(registry, warehouse, curriculum, AT)
    assert announce_verdict_changes(registry, warehouse, curriculum, AT) == []  # same run
    (delivered,) = _deliver(registry, receiver)
    promotes = next(lv.promotes for lv in curriculum.levels if lv.level == 2)
    assert delivered["text"] == (
        f"Level Verdict Changed — Level 2 ({', '.join(promotes)}) — "
        "passed → did not pass; missed sharpe 0.3 (needs 0.5)"
    )
    assert delivered["key"] == note.key == "verdict-L2-run-b"
    assert delivered["links"] == {
        "dagster_run": "http://dagster.test:3000/runs/run-b",
        "mlflow_run": "http://mlflow.test:5000/#/runs/mlflow-b",
    }


def test_the_parameter_diff_lists_only_what_changed() -> None:
    assert param_changes({"a": 1, "b": 2.0, "c": "x"}, {"a": 1, "b": 2.5, "d": 4}) == (
        ParamChange("b", 2.0, 2.5),
        ParamChange("c", "x", None),
        ParamChange("d", None, 4),
    )
    assert param_changes(None, None) == ()


def test_the_retry_delay_doubles_up_to_its_cap() -> None:
    delays = [retry_delay_s(n, base_s=30.0, cap_s=3600.0) for n in range(1, 10)]
    assert delays == [30.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 3600.0, 3600.0]
    assert retry_delay_s(10_000, base_s=30.0, cap_s=3600.0) == 3600.0
    with pytest.raises(ValueError, match="attempts must be >= 1"):
        retry_delay_s(0, base_s=30.0, cap_s=3600.0)


def test_the_same_verdict_is_no_change() -> None:
    same = level_row({"passed": True, "criteria": []})
    assert (
        verdict_change(
            level=1, regimes=["BULL"], previous=same, latest=same, latest_run_id="r", at=AT
        )
        is None
    )
    skipped = verdict_change(
        level=1,
        regimes=["BULL"],
        previous=same,
        latest=level_row({"skipped": True}),
        latest_run_id="r",
        at=AT,
    )
    assert skipped is not None and skipped.kind is Kind.VERDICT_CHANGE
    assert skipped.details["after"] == "skipped"
