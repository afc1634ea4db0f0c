"""The versioned registry of promoted parameters, in the same database as the Optuna studies.

The tables, their statuses and stages, and how rows are stored and decoded are in
``ffe_dagster.resources.registry_schema``; this module is the resource that reads and changes
them, each change one transaction that also appends its row to the audit trail
(``parameter_transitions``).
"""

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from dagster import ConfigurableResource

from ffe_dagster.core.promotion.config import Stage
from ffe_dagster.core.promotion.records import Action, Marks, RegimeAction, VersionStatus
from ffe_dagster.resources.journal_postgres import database_url
from ffe_dagster.resources.outbox import Outbox
from ffe_dagster.resources.registry_queries import (
    audit_entry,
    current_number,
    explicit_target,
    in_flight_row,
    insert_version,
    next_version,
    previous_promoted,
    roll_back,
    supersede_current,
    transition,
    update_version,
)
from ffe_dagster.resources.registry_reads import RegistryReads
from ffe_dagster.resources.registry_records import (
    insert_cold_bars,
    insert_regime_decision,
)
from ffe_dagster.resources.registry_schema import (
    METADATA,
    VERSIONS,
    add_missing_columns,
    marks_json,
    to_json,
)

__all__ = ["ParameterRegistryResource"]


class ParameterRegistryResource(RegistryReads, ConfigurableResource):
    """SQL registry (SQLite by default, PostgreSQL in production) of parameter versions.

    ``url`` is an SQLAlchemy URL, or the ``journal+postgresql…`` URL of the Optuna studies: the
    registry's tables then sit in the database under that journal."""

    url: str
    # When notifications are required (FFE_NOTIFY_REQUIRED) and one has waited longer than this
    # for delivery, promotion to LIMITED and FULL waits (``delivery_hold``).
    notify_required: bool = False
    notify_stall_minutes: float = 60.0

    @contextmanager
    def _connect(self, write: bool) -> Iterator[sa.Connection]:
        if self.url.startswith("sqlite:///"):
            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(database_url(self.url))
        try:
            METADATA.create_all(engine)
            add_missing_columns(engine)
            with engine.begin() if write else engine.connect() as con:
                yield con
        finally:
            engine.dispose()

    def outbox(self) -> Outbox:
        """The notification outbox in this registry's database."""
        return Outbox(self._connect)

    def delivery_hold(self, now: datetime) -> str | None:
        """Why promotion to LIMITED and FULL must wait now, or None: notifications are required
        and the oldest undelivered one has waited more than ``notify_stall_minutes``."""
        if not self.notify_required:
            return None
        oldest = self.outbox().oldest_pending()
        if oldest is None or now - oldest[0] <= timedelta(minutes=self.notify_stall_minutes):
            return None
        made, error = oldest
        return (
            f"notifications are required and undelivered since {made:%Y-%m-%d %H:%M} UTC "
            f"({error or 'not tried yet'}): promotion to LIMITED and FULL waits for delivery"
        )

    # --- writing -------------------------------------------------------------------------------

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
        """Store a decision about a regime that creates no version (see ``regime_decisions``)."""
        with self._connect(write=True) as con:
            insert_regime_decision(
                con,
                regime=regime,
                level=level,
                stage=stage,
                action=action,
                reason=reason,
                trigger=trigger,
                run_id=run_id,
                at=at or datetime.now(UTC),
            )

    def note_cold_bars(
        self,
        regime: str,
        used: Mapping[str, tuple[datetime, datetime]],
        *,
        tested: Sequence[Mapping[str, Any]],
        version: int | None,
        run_id: str | None,
        at: datetime | None = None,
    ) -> None:
        """Remember which bars (first, last per instrument) a COLD test of ``regime`` judged."""
        with self._connect(write=True) as con:
            insert_cold_bars(
                con,
                regime=regime,
                used=used,
                tested=tested,
                version=version,
                run_id=run_id,
                at=at or datetime.now(UTC),
            )

    def record(
        self,
        *,
        regime: str,
        level: int,
        params: Mapping[str, Any],
        metrics: Mapping[str, Any],
        stage: Stage,
        promoted: bool,
        reason: str,
        trigger: str,
        run_id: str | None,
    ) -> int:
        """Store a version in one step: current at once when ``promoted`` (the old current is
        superseded), else rejected at ``stage``. The staged path is ``add_candidate`` and
        ``advance``; this one stays for imports and tests of a finished decision."""
        d = audit_entry(reason, trigger, run_id, metrics, None, None)
        with self._connect(write=True) as con:
            version = next_version(con, regime)
            previous = current_number(con, regime)
            if promoted:
                supersede_current(con, regime, d.at)
            insert_version(
                con,
                d,
                regime=regime,
                version=version,
                level=level,
                params=params,
                metrics=metrics,
                stage=Stage.FULL if promoted else stage,
                status=VersionStatus.CURRENT if promoted else VersionStatus.REJECTED,
            )
            transition(
                con,
                d,
                regime=regime,
                version=version,
                from_version=previous,
                to_version=version if promoted else previous,
                action=Action.PROMOTE if promoted else Action.REJECT,
                from_stage=stage,
                to_stage=Stage.FULL if promoted else stage,
            )
        return version

    def add_candidate(
        self,
        *,
        regime: str,
        level: int,
        direction: str,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        passed: bool,
        reason: str,
        checks: Sequence[Mapping[str, Any]],
        trigger: str,
        run_id: str | None,
        data_marks: Marks,
        source_run_id: str | None,
        candidate_number: int | None,
        at: datetime | None = None,
    ) -> int:
        """Store a new version judged by the COLD gate: in flight at WARM when it ``passed``, else
        rejected at COLD. ``data_marks`` (the newest bar per instrument now) is where its WARM
        paper trading starts. Returns the version number."""
        d = audit_entry(reason, trigger, run_id, metrics, checks, at)
        stage = Stage.WARM if passed else Stage.COLD
        with self._connect(write=True) as con:
            version = next_version(con, regime)
            current = current_number(con, regime)
            insert_version(
                con,
                d,
                regime=regime,
                version=version,
                level=level,
                params=params,
                metrics=metrics,
                stage=stage,
                status=VersionStatus.CANDIDATE if passed else VersionStatus.REJECTED,
                direction=direction,
                source_run_id=source_run_id,
                candidate_number=candidate_number,
                data_marks=marks_json(data_marks),
                stage_marks=marks_json(data_marks),
                stage_metrics=to_json(dict(metrics)),
            )
            transition(
                con,
                d,
                regime=regime,
                version=version,
                from_version=current,
                to_version=current,
                action=Action.ADVANCE if passed else Action.REJECT,
                from_stage=Stage.COLD,
                to_stage=stage,
            )
        return version

    def advance(
        self,
        *,
        regime: str,
        version: int,
        to_stage: Stage,
        reason: str,
        metrics: Mapping[str, Any],
        checks: Sequence[Mapping[str, Any]],
        trigger: str,
        run_id: str | None,
        data_marks: Marks | None = None,
        at: datetime | None = None,
    ) -> None:
        """Move an in-flight version one stage up: WARM -> LIMITED, or LIMITED -> FULL (it
        becomes current, the old current is superseded; ``data_marks`` is where the watch of
        its safety limits starts)."""
        d = audit_entry(reason, trigger, run_id, metrics, checks, at)
        with self._connect(write=True) as con:
            row = in_flight_row(con, regime, version)
            from_stage = row.stage
            expected = {Stage.WARM: Stage.LIMITED, Stage.LIMITED: Stage.FULL}.get(from_stage)
            if to_stage != expected:
                raise ValueError(f"{regime} v{version} at {from_stage} cannot move to {to_stage}")
            previous = current_number(con, regime)
            full = to_stage == Stage.FULL
            if full:
                supersede_current(con, regime, d.at)
            update_version(
                con,
                regime,
                version,
                stage=to_stage,
                status=VersionStatus.CURRENT if full else VersionStatus.CANDIDATE,
                reason=reason,
                stage_entered_at=d.at,
                stage_marks=marks_json(data_marks if full else row.stage_marks),
                stage_metrics=to_json(dict(metrics)),
                stage_run_id=run_id,
                updated_at=d.at,
            )
            transition(
                con,
                d,
                regime=regime,
                version=version,
                from_version=previous,
                to_version=version if full else previous,
                action=Action.PROMOTE if full else Action.ADVANCE,
                from_stage=from_stage,
                to_stage=to_stage,
            )

    def wait(
        self,
        *,
        regime: str,
        version: int,
        reason: str,
        metrics: Mapping[str, Any],
        checks: Sequence[Mapping[str, Any]],
        trigger: str,
        run_id: str | None,
        at: datetime | None = None,
    ) -> None:
        """Record that an in-flight version could not be judged yet; it stays at its stage."""
        self._decide(regime, version, Action.WAIT, reason, metrics, checks, trigger, run_id, at)

    def reject(
        self,
        *,
        regime: str,
        version: int,
        reason: str,
        metrics: Mapping[str, Any],
        checks: Sequence[Mapping[str, Any]],
        trigger: str,
        run_id: str | None,
        at: datetime | None = None,
    ) -> None:
        """Reject an in-flight version at its stage."""
        self._decide(regime, version, Action.REJECT, reason, metrics, checks, trigger, run_id, at)

    def _decide(
        self,
        regime: str,
        version: int,
        action: Action,
        reason: str,
        metrics: Mapping[str, Any],
        checks: Sequence[Mapping[str, Any]],
        trigger: str,
        run_id: str | None,
        at: datetime | None,
    ) -> None:
        d = audit_entry(reason, trigger, run_id, metrics, checks, at)
        with self._connect(write=True) as con:
            row = in_flight_row(con, regime, version)
            values: dict[str, Any] = {
                "reason": reason,
                "stage_metrics": to_json(dict(metrics)),
                "updated_at": d.at,
            }
            if action is Action.REJECT:
                values["status"] = VersionStatus.REJECTED
            update_version(con, regime, version, **values)
            current = current_number(con, regime)
            transition(
                con,
                d,
                regime=regime,
                version=version,
                from_version=current,
                to_version=current,
                action=action,
                from_stage=row.stage,
                to_stage=row.stage,
            )

    def rollback(
        self,
        regime: str,
        *,
        reason: str,
        trigger: str,
        run_id: str | None,
        to_version: int | None = None,
        metrics: Mapping[str, Any] | None = None,
        checks: Sequence[Mapping[str, Any]] | None = None,
        at: datetime | None = None,
    ) -> int:
        """Make an earlier promoted version current again; returns it.

        By default the newest superseded version older than the current one; ``to_version``
        picks any version that was once current (superseded or rolled back). The current version
        (if any) becomes ``rolled_back``. The restored version's safety watch starts afresh: its
        ``stage_marks`` are cleared and set by the next cycle.
        """
        d = audit_entry(reason, trigger, run_id, metrics, checks, at)
        with self._connect(write=True) as con:
            current = current_number(con, regime)
            target = (
                explicit_target(con, regime, to_version, current)
                if to_version is not None
                else previous_promoted(con, regime, current)
            )
            if current is not None:
                roll_back(con, regime, current, d)
            update_version(
                con,
                regime,
                target,
                status=VersionStatus.CURRENT,
                stage=Stage.FULL,
                stage_entered_at=d.at,
                stage_marks=None,
                stage_run_id=run_id,
                updated_at=d.at,
            )
            transition(
                con,
                d,
                regime=regime,
                version=target,
                from_version=current,
                to_version=target,
                action=Action.ROLLBACK,
                from_stage=Stage.FULL,
                to_stage=Stage.FULL,
            )
        return target

    def suspend(
        self,
        regime: str,
        *,
        reason: str,
        trigger: str,
        run_id: str | None,
        metrics: Mapping[str, Any] | None = None,
        checks: Sequence[Mapping[str, Any]] | None = None,
        at: datetime | None = None,
    ) -> int:
        """Take the current version back when there is no earlier one to return to: the regime
        has no current set until a new one is promoted. Returns the suspended version."""
        d = audit_entry(reason, trigger, run_id, metrics, checks, at)
        with self._connect(write=True) as con:
            current = current_number(con, regime)
            if current is None:
                raise ValueError(f"regime {regime} has no current version to suspend")
            roll_back(con, regime, current, d)
            transition(
                con,
                d,
                regime=regime,
                version=current,
                from_version=current,
                to_version=None,
                action=Action.SUSPEND,
                from_stage=Stage.FULL,
                to_stage=Stage.FULL,
            )
        return current

    def start_watch(self, regime: str, version: int, data_marks: Marks) -> None:
        """Set where the safety watch of the current version starts (after a rollback restored
        it, or for a version promoted before the watch existed)."""
        with self._connect(write=True) as con:
            done = update_version(
                con,
                regime,
                version,
                VERSIONS.c.status == VersionStatus.CURRENT,
                stage_marks=marks_json(data_marks),
                updated_at=datetime.now(UTC),
            )
            if done != 1:
                raise ValueError(f"{regime} v{version} is not the current version")

    def set_mlflow_model_version(self, regime: str, version: int, model_version: int) -> None:
        """Remember which MLflow model-registry version holds this parameter version."""
        with self._connect(write=True) as con:
            done = update_version(
                con,
                regime,
                version,
                mlflow_model_version=model_version,
                updated_at=datetime.now(UTC),
            )
            if done != 1:
                raise KeyError(f"regime {regime} has no version {version}")
