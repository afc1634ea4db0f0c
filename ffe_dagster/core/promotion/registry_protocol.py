"""The registry the promotion depends on: the reads and changes the state machine, the export
and the rollback make, typed with ``records``.

``resources/registry.ParameterRegistryResource`` implements it over SQL (SQLite, PostgreSQL);
``tests/fakes/in_memory_registry.InMemoryRegistry`` implements it in memory, so the state machine
can be tested without a database and checked against the SQL registry on the same inputs. Each
change is one decision: it stores the version's new stage or status and appends its audit row.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from ffe_dagster.core.promotion.config import Stage
from ffe_dagster.core.promotion.records import Marks, ParameterVersion, RegimeAction
from ffe_dagster.core.study.evaluation import Params

Checks = Sequence[Mapping[str, Any]]  # ``GateDecision.checks_as_dicts()``, as the trail stores


class PromotionRegistry(Protocol):
    """The versions of every regime and the decisions about them."""

    def current(self, regime: str) -> ParameterVersion | None:
        """The current (FULL) version of ``regime``, or None."""
        ...

    def in_flight(self, regime: str) -> list[ParameterVersion]:
        """The versions of ``regime`` at WARM or LIMITED, oldest first."""
        ...

    def history(self, regime: str | None = None) -> list[ParameterVersion]:
        """Every version (of one regime when given), by regime then version."""
        ...

    def cold_bars_used(self, regime: str) -> dict[str, datetime]:
        """Per instrument, the newest bar an earlier COLD test of ``regime`` judged."""
        ...

    def cold_tested(self, regime: str) -> list[dict[str, Any]]:
        """Every parameter set a COLD test of ``regime`` judged."""
        ...

    def delivery_hold(self, now: datetime) -> str | None:
        """Why promotion to LIMITED and FULL must wait now (undelivered notifications), or None."""
        ...

    def note_decision(
        self,
        *,
        regime: str,
        level: int,
        stage: Stage,
        action: RegimeAction,
        reason: str,
        trigger: str,
        run_id: str | None,
        at: datetime | None = None,
    ) -> None:
        """Store a decision about ``regime`` that creates no version."""
        ...

    def note_cold_bars(
        self,
        regime: str,
        used: Mapping[str, tuple[datetime, datetime]],
        *,
        tested: Sequence[Params],
        version: int | None,
        run_id: str | None,
        at: datetime | None = None,
    ) -> None:
        """Remember which bars (first, last per instrument) a COLD test of ``regime`` judged."""
        ...

    def add_candidate(
        self,
        *,
        regime: str,
        level: int,
        direction: str,
        params: Params,
        metrics: Mapping[str, float],
        passed: bool,
        reason: str,
        checks: Checks,
        trigger: str,
        run_id: str | None,
        data_marks: Marks,
        source_run_id: str | None,
        candidate_number: int | None,
        at: datetime | None = None,
    ) -> int:
        """Store a version judged by COLD: at WARM when it ``passed``, else rejected at COLD."""
        ...

    def advance(
        self,
        *,
        regime: str,
        version: int,
        to_stage: Stage,
        reason: str,
        metrics: Mapping[str, float],
        checks: Checks,
        trigger: str,
        run_id: str | None,
        data_marks: Marks | None = None,
        at: datetime | None = None,
    ) -> None:
        """Move an in-flight version one stage up (LIMITED -> FULL makes it current)."""
        ...

    def wait(
        self,
        *,
        regime: str,
        version: int,
        reason: str,
        metrics: Mapping[str, float],
        checks: Checks,
        trigger: str,
        run_id: str | None,
        at: datetime | None = None,
    ) -> None:
        """Record that an in-flight version could not be judged yet."""
        ...

    def reject(
        self,
        *,
        regime: str,
        version: int,
        reason: str,
        metrics: Mapping[str, float],
        checks: Checks,
        trigger: str,
        run_id: str | None,
        at: datetime | None = None,
    ) -> None:
        """Reject an in-flight version at its stage."""
        ...

    def rollback(
        self,
        regime: str,
        *,
        reason: str,
        trigger: str,
        run_id: str | None,
        to_version: int | None = None,
        metrics: Mapping[str, float] | None = None,
        checks: Checks | None = None,
        at: datetime | None = None,
    ) -> int:
        """Make an earlier promoted version current again; returns it."""
        ...

    def suspend(
        self,
        regime: str,
        *,
        reason: str,
        trigger: str,
        run_id: str | None,
        metrics: Mapping[str, float] | None = None,
        checks: Checks | None = None,
        at: datetime | None = None,
    ) -> int:
        """Take the current version back with nothing to return to; returns it."""
        ...

    def start_watch(self, regime: str, version: int, data_marks: Marks) -> None:
        """Set where the safety watch of the current version starts."""
        ...

    def set_mlflow_model_version(self, regime: str, version: int, model_version: int) -> None:
        """Remember which MLflow model-registry version holds this parameter version."""
        ...
