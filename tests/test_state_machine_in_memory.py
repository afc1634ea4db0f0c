"""The promotion state machine on the in-memory registry (``tests/fakes/in_memory_registry.py``),
each step run on the real SQLite registry too with the same bars, candidates, live results and
clock: the decisions, the stored versions and the audit trail must be the same, so the fake
cannot drift from the registry it stands in for.

The scenarios are those of ``test_promotion_cycle.py`` (COLD -> WARM -> LIMITED -> FULL on the
bundled 2022 bars) and ``test_rollback.py`` (a safety breach rolls back; a manual rollback)."""

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from ffe_dagster.core.backtest.reference import Direction
from ffe_dagster.core.promotion.config import LimitedGateConfig, PromotionRegime, Stage
from ffe_dagster.core.promotion.records import (
    Action,
    RegimeAction,
    Trigger,
    VersionStatus,
)
from ffe_dagster.core.promotion.registry_protocol import PromotionRegistry
from ffe_dagster.core.study.evaluation import Params
from ffe_dagster.core.study.selection import Candidate
from ffe_dagster.promotion.decisions import CycleReport
from ffe_dagster.promotion.export import export_current
from ffe_dagster.promotion.state_machine import RegimeCandidates
from ffe_dagster.resources.registry import ParameterRegistryResource
from tests.fakes.in_memory_registry import InMemoryRegistry
from tests.promotion_cycle_helpers import (
    HOUR,
    LOSER,
    T0,
    A,
    B,
    decisions,
    live_trades,
    load_history,
    run_cycle,
    upto,
)

FIVE = timedelta(minutes=5)
REGIMES = [r.value for r in PromotionRegime]


@pytest.fixture(scope="module")
def history() -> dict[str, pl.DataFrame]:
    return load_history()


class Both:
    """The SQL registry and the fake, driven in step."""

    def __init__(self, tmp_path: Path) -> None:
        self.sql = ParameterRegistryResource(url=f"sqlite:///{tmp_path / 'registry.db'}")
        self.fake = InMemoryRegistry()
        self.folder = tmp_path

    def cycle(
        self,
        bars: dict[str, pl.DataFrame],
        now: datetime,
        run_id: str,
        candidates: Sequence[RegimeCandidates] = (),
        live: pl.DataFrame | None = None,
    ) -> CycleReport:
        """One cycle on each registry; the reports and the stored state must agree."""
        on_sql = run_cycle(self.sql, bars, now, run_id, candidates, live)
        on_fake = run_cycle(self.fake, bars, now, run_id, candidates, live)
        assert on_fake.rows == on_sql.rows
        assert on_fake.changes == on_sql.changes
        self.agree()
        return on_fake

    def agree(self) -> None:
        assert _state(self.fake) == _state(self.sql)
        assert self.fake.transitions() == self.sql.transitions()
        assert self.fake.regime_decisions() == self.sql.regime_decisions()
        assert _export(self.fake, self.folder / "fake.json") == _export(
            self.sql, self.folder / "sql.json"
        )


def _state(registry: PromotionRegistry) -> dict[str, Any]:
    # ``updated_at`` of start_watch and set_mlflow_model_version is the wall clock: not compared.
    return {
        "versions": [dataclasses.replace(v, updated_at=None) for v in registry.history()],
        "cold_bars_used": {r: registry.cold_bars_used(r) for r in REGIMES},
        "cold_tested": {r: registry.cold_tested(r) for r in REGIMES},
        "current": {r: registry.current(r) is not None for r in REGIMES},
    }


def _export(registry: PromotionRegistry, path: Path) -> dict[str, Any]:
    payload = export_current(registry, path, "run", LimitedGateConfig())
    return {k: v for k, v in payload.items() if k != "generated_at"}


def _level4(*candidates: Candidate) -> list[RegimeCandidates]:
    return [
        RegimeCandidates(
            regime=PromotionRegime.DEFAULT,
            level=4,
            direction=Direction.BOTH,
            candidates=list(candidates),
            source_run_id="mlflow-level-4",
        )
    ]


def test_the_climb_cold_warm_limited_full_decides_alike_on_both_registries(
    history: dict[str, pl.DataFrame], tmp_path: Path
) -> None:
    both = Both(tmp_path)
    only_a = _level4(Candidate(12, A, {}, {"sharpe": 2.0}, True))
    level4 = _level4(
        Candidate(11, B, {}, {"sharpe": 2.0}, True), Candidate(12, A, {}, {"sharpe": 2.0}, True)
    )

    report = both.cycle(upto(history, T0), T0 + FIVE, "cycle-1", only_a)
    assert decisions(report) == [("DEFAULT", 1, Stage.COLD, Action.ADVANCE)]
    v1 = both.fake.version("DEFAULT", 1)
    assert (v1.stage, v1.status, v1.params) == (Stage.WARM, VersionStatus.CANDIDATE, A)

    t2 = T0 + 2 * HOUR
    report = both.cycle(upto(history, t2), t2 + FIVE, "cycle-2", level4)
    assert decisions(report) == [
        ("DEFAULT", 1, Stage.WARM, Action.WAIT),
        ("DEFAULT", None, Stage.COLD, RegimeAction.SKIP),
    ]

    t3 = T0 + timedelta(days=13)
    now3 = t3 + FIVE
    report = both.cycle(upto(history, t3), now3, "cycle-3", level4)
    assert decisions(report)[0] == ("DEFAULT", 1, Stage.WARM, Action.ADVANCE)

    live = live_trades(1, now3 + 30 * timedelta(minutes=1), [1.0, 1.0, 1.0, -0.5, 1.0] * 4)
    report = both.cycle(upto(history, t3), now3 + 12 * HOUR, "cycle-4", live=live)
    assert decisions(report) == [("DEFAULT", 1, Stage.LIMITED, Action.WAIT)]
    report = both.cycle(upto(history, t3), now3 + 25 * HOUR, "cycle-5", live=live)
    assert decisions(report)[0] == ("DEFAULT", 1, Stage.LIMITED, Action.PROMOTE)
    current = both.fake.current("DEFAULT")
    assert current is not None and (current.version, current.stage) == (1, Stage.FULL)

    t6 = T0 + timedelta(days=16)
    report = both.cycle(upto(history, t6), t6 + FIVE, "cycle-6", level4, live)
    assert ("DEFAULT", 2, Stage.COLD, Action.ADVANCE) in decisions(report)
    t7 = T0 + timedelta(days=30)
    report = both.cycle(upto(history, t7), t7 + FIVE, "cycle-7", level4, live)
    assert ("DEFAULT", 1, Stage.FULL, "watch: pass") in decisions(report)

    trail = [(t.action, t.version, t.run_id) for t in both.fake.transitions("DEFAULT")]
    assert trail == [
        (Action.ADVANCE, 1, "cycle-1"),
        (Action.WAIT, 1, "cycle-2"),
        (Action.ADVANCE, 1, "cycle-3"),
        (Action.WAIT, 1, "cycle-4"),
        (Action.PROMOTE, 1, "cycle-5"),
        (Action.ADVANCE, 2, "cycle-6"),
        (Action.REJECT, 2, "cycle-7"),
    ]


def _promote(registry: PromotionRegistry, params: Params, sharpe: float, at: datetime) -> int:
    """A version climbed to FULL at ``at`` (its safety watch starts at ``at``'s bars)."""
    marks = {"BTC_USDT": at, "ETH_USDT": at}
    version = registry.add_candidate(
        regime="DEFAULT",
        level=4,
        direction="both",
        params=params,
        metrics={"sharpe": sharpe},
        passed=True,
        reason="COLD passed",
        checks=[],
        trigger="manual",
        run_id="seed",
        data_marks=marks,
        source_run_id=None,
        candidate_number=None,
        at=at,
    )
    for stage in (Stage.LIMITED, Stage.FULL):
        registry.advance(
            regime="DEFAULT",
            version=version,
            to_stage=stage,
            reason=f"{stage} by hand",
            metrics={},
            checks=[],
            trigger="manual",
            run_id="seed",
            data_marks=marks,
            at=at,
        )
    return version


def test_a_breach_rolls_back_alike_and_so_does_a_manual_rollback(
    history: dict[str, pl.DataFrame], tmp_path: Path
) -> None:
    both = Both(tmp_path)
    start, later = datetime(2022, 5, 1, tzinfo=UTC), datetime(2022, 5, 12, tzinfo=UTC)
    for registry in (both.sql, both.fake):
        assert _promote(registry, A, 1.0, start - timedelta(days=1)) == 1
        assert _promote(registry, LOSER, 2.0, start) == 2
    both.agree()

    # LOSER loses more than $5 on a day of these bars (test_rollback.py works it by hand)
    report = both.cycle(upto(history, later), later + HOUR, "watch-2")
    assert [(c.action, c.version, c.previous) for c in report.changes] == [(Action.ROLLBACK, 1, 2)]
    rollback = both.fake.transitions("DEFAULT")[-1]
    assert (rollback.action, rollback.trigger) == (Action.ROLLBACK, Trigger.AUTOMATIC_ROLLBACK)
    assert "safety.daily_loss" in {c.name for c in rollback.checks if not c.passed}
    # the restored version's watch starts afresh on the next cycle
    report = both.cycle(upto(history, later), later + 2 * HOUR, "watch-3")
    assert decisions(report) == [("DEFAULT", 1, Stage.FULL, "watch")]

    # an operator puts v2 back, then takes it away again with nothing earlier left: suspended
    at = later + 3 * HOUR
    for registry in (both.sql, both.fake):
        assert (
            registry.rollback(
                "DEFAULT", reason="operator", trigger="manual", run_id="job", to_version=2, at=at
            )
            == 2
        )
        with pytest.raises(ValueError, match="v2 is already current"):
            registry.rollback("DEFAULT", reason="r", trigger="manual", run_id=None, to_version=2)
        with pytest.raises(ValueError, match="trigger must be one of"):
            registry.suspend("DEFAULT", reason="r", trigger="cron", run_id=None)
        assert registry.suspend("DEFAULT", reason="no", trigger="manual", run_id=None, at=at) == 2
        assert registry.current("DEFAULT") is None
    both.agree()
    statuses = [(v.version, v.status) for v in both.fake.history("DEFAULT")]
    assert statuses == [(1, VersionStatus.ROLLED_BACK), (2, VersionStatus.ROLLED_BACK)]
