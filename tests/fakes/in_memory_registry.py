"""An in-memory registry implementing ``core/promotion/registry_protocol.PromotionRegistry``, so
the state machine runs without a database. It keeps the SQL registry's rules (stages, statuses,
the audit trail, rollback targets); ``tests/test_state_machine_in_memory.py`` runs both on the
same inputs so the two cannot drift apart.

Values go through JSON on the way in, as the SQL registry stores them, so a record read back
from either compares equal.
"""

import dataclasses
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ffe_dagster.core.backtest.reference import Direction
from ffe_dagster.core.promotion.config import Stage
from ffe_dagster.core.promotion.records import (
    Action,
    Marks,
    ParameterVersion,
    RegimeAction,
    RegimeDecision,
    Transition,
    Trigger,
    VersionStatus,
    checks_from_json,
)
from ffe_dagster.core.promotion.registry_protocol import Checks
from ffe_dagster.core.study.evaluation import Params

_NEXT = {Stage.WARM: Stage.LIMITED, Stage.LIMITED: Stage.FULL}


def _stored(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _trigger(trigger: str) -> Trigger:
    if trigger not in tuple(Trigger):
        raise ValueError(
            f"trigger must be one of {tuple(t.value for t in Trigger)}, got {trigger!r}"
        )
    return Trigger(trigger)


@dataclasses.dataclass(frozen=True, slots=True)
class _Why:
    """What every audit row of one decision shares (``AuditEntry`` in the SQL registry)."""

    reason: str
    trigger: str
    run_id: str | None
    at: datetime
    metrics: Mapping[str, float] | None
    checks: Checks | None


class InMemoryRegistry:
    """The registry's versions, audit trail, regime decisions and COLD bars, in lists."""

    def __init__(self, hold: str | None = None) -> None:
        self.hold = hold  # what ``delivery_hold`` answers (undelivered notifications)
        self._versions: list[ParameterVersion] = []
        self._transitions: list[Transition] = []
        self._decisions: list[RegimeDecision] = []
        self._cold: list[tuple[str, str, datetime, Any]] = []  # regime, instrument, last, tested

    # --- reads -----------------------------------------------------------------------------

    def current(self, regime: str) -> ParameterVersion | None:
        found = [v for v in self.history(regime) if v.status is VersionStatus.CURRENT]
        return found[0] if found else None

    def version(self, regime: str, version: int) -> ParameterVersion:
        for v in self._versions:
            if (v.regime, v.version) == (regime, version):
                return v
        raise KeyError(f"regime {regime} has no version {version}")

    def in_flight(self, regime: str) -> list[ParameterVersion]:
        return [v for v in self.history(regime) if v.status is VersionStatus.CANDIDATE]

    def history(self, regime: str | None = None) -> list[ParameterVersion]:
        found = [v for v in self._versions if regime is None or v.regime == regime]
        return sorted(found, key=lambda v: (v.regime, v.version))

    def transitions(self, regime: str | None = None) -> list[Transition]:
        return [t for t in self._transitions if regime is None or t.regime == regime]

    def regime_decisions(self, regime: str | None = None) -> list[RegimeDecision]:
        return [d for d in self._decisions if regime is None or d.regime == regime]

    def cold_bars_used(self, regime: str) -> dict[str, datetime]:
        out: dict[str, datetime] = {}
        for r, instrument, last, _ in self._cold:
            if r == regime:
                out[instrument] = max(last, out.get(instrument, last))
        return out

    def cold_tested(self, regime: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for r, _, _, tested in self._cold:
            for params in tested if r == regime else []:
                if params not in out:
                    out.append(params)
        return out

    def delivery_hold(self, now: datetime) -> str | None:
        return self.hold

    # --- changes ---------------------------------------------------------------------------

    def _set(self, regime: str, version: int, **changes: Any) -> ParameterVersion:
        row = self.version(regime, version)
        new = dataclasses.replace(row, **changes)
        self._versions[self._versions.index(row)] = new
        return new

    def _current_number(self, regime: str) -> int | None:
        current = self.current(regime)
        return None if current is None else current.version

    def _in_flight_row(self, regime: str, version: int) -> ParameterVersion:
        try:
            row = self.version(regime, version)
        except KeyError:
            row = None
        if row is None or row.status is not VersionStatus.CANDIDATE:
            raise ValueError(f"{regime} v{version} is not in flight")
        return row

    def _supersede_current(self, regime: str, at: datetime) -> None:
        current = self.current(regime)
        if current is not None:
            self._set(regime, current.version, status=VersionStatus.SUPERSEDED, updated_at=at)

    def _trail(
        self,
        *,
        regime: str,
        version: int,
        from_version: int | None,
        to_version: int | None,
        action: Action,
        from_stage: Stage,
        to_stage: Stage,
        why: "_Why",
    ) -> None:
        self._transitions.append(
            Transition(
                id=len(self._transitions) + 1,
                regime=regime,
                version=version,
                from_version=from_version,
                to_version=to_version,
                action=action,
                from_stage=from_stage,
                to_stage=to_stage,
                reason=why.reason,
                trigger=_trigger(why.trigger),
                run_id=why.run_id,
                at=why.at,
                metrics=_stored(dict(why.metrics or {})),
                checks=checks_from_json(_stored([dict(c) for c in why.checks or ()])),
            )
        )

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
        self._decisions.append(
            RegimeDecision(
                id=len(self._decisions) + 1,
                regime=regime,
                level=level,
                stage=stage,
                action=action,
                reason=reason,
                trigger=_trigger(trigger),
                run_id=run_id,
                at=at or datetime.now(UTC),
            )
        )

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
        sets = _stored([dict(p) for p in tested])
        for instrument, (_, last) in sorted(used.items()):
            self._cold.append((regime, instrument, last, sets))

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
        at = at or datetime.now(UTC)
        stage = Stage.WARM if passed else Stage.COLD
        version = max((v.version for v in self.history(regime)), default=0) + 1
        current = self._current_number(regime)
        self._versions.append(
            ParameterVersion(
                regime=regime,
                version=version,
                level=level,
                params=_stored(dict(params)),
                metrics=_stored(dict(metrics)),
                stage=stage,
                status=VersionStatus.CANDIDATE if passed else VersionStatus.REJECTED,
                reason=reason,
                trigger=_trigger(trigger),
                run_id=run_id,
                created_at=at,
                direction=Direction(direction),
                source_run_id=source_run_id,
                candidate_number=candidate_number,
                data_marks=dict(data_marks),
                stage_entered_at=at,
                stage_marks=dict(data_marks),
                stage_metrics=_stored(dict(metrics)),
                stage_run_id=run_id,
                updated_at=at,
            )
        )
        self._trail(
            regime=regime,
            version=version,
            from_version=current,
            to_version=current,
            action=Action.ADVANCE if passed else Action.REJECT,
            from_stage=Stage.COLD,
            to_stage=stage,
            why=_Why(reason, trigger, run_id, at, metrics, checks),
        )
        return version

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
        _trigger(trigger)
        at = at or datetime.now(UTC)
        row = self._in_flight_row(regime, version)
        if to_stage != _NEXT.get(row.stage):
            raise ValueError(f"{regime} v{version} at {row.stage} cannot move to {to_stage}")
        previous = self._current_number(regime)
        full = to_stage is Stage.FULL
        if full:
            self._supersede_current(regime, at)
        self._set(
            regime,
            version,
            stage=to_stage,
            status=VersionStatus.CURRENT if full else VersionStatus.CANDIDATE,
            reason=reason,
            stage_entered_at=at,
            stage_marks=(None if data_marks is None else dict(data_marks))
            if full
            else row.stage_marks,
            stage_metrics=_stored(dict(metrics)),
            stage_run_id=run_id,
            updated_at=at,
        )
        self._trail(
            regime=regime,
            version=version,
            from_version=previous,
            to_version=version if full else previous,
            action=Action.PROMOTE if full else Action.ADVANCE,
            from_stage=row.stage,
            to_stage=to_stage,
            why=_Why(reason, trigger, run_id, at, metrics, checks),
        )

    def _decide(
        self,
        action: Action,
        *,
        regime: str,
        version: int,
        reason: str,
        metrics: Mapping[str, float],
        checks: Checks,
        trigger: str,
        run_id: str | None,
        at: datetime | None,
    ) -> None:
        _trigger(trigger)
        at = at or datetime.now(UTC)
        row = self._in_flight_row(regime, version)
        changes: dict[str, Any] = {
            "reason": reason,
            "stage_metrics": _stored(dict(metrics)),
            "updated_at": at,
        }
        if action is Action.REJECT:
            changes["status"] = VersionStatus.REJECTED
        self._set(regime, version, **changes)
        current = self._current_number(regime)
        self._trail(
            regime=regime,
            version=version,
            from_version=current,
            to_version=current,
            action=action,
            from_stage=row.stage,
            to_stage=row.stage,
            why=_Why(reason, trigger, run_id, at, metrics, checks),
        )

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
        self._decide(
            Action.WAIT,
            regime=regime,
            version=version,
            reason=reason,
            metrics=metrics,
            checks=checks,
            trigger=trigger,
            run_id=run_id,
            at=at,
        )

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
        self._decide(
            Action.REJECT,
            regime=regime,
            version=version,
            reason=reason,
            metrics=metrics,
            checks=checks,
            trigger=trigger,
            run_id=run_id,
            at=at,
        )

    def _target(self, regime: str, to_version: int | None, current: int | None) -> int:
        if to_version is None:
            earlier = [
                v.version
                for v in self.history(regime)
                if v.status is VersionStatus.SUPERSEDED and (current is None or v.version < current)
            ]
            if not earlier:
                raise ValueError(f"regime {regime} has no earlier promoted version to return to")
            return max(earlier)
        try:
            row = self.version(regime, to_version)
        except KeyError as exc:
            raise ValueError(f"regime {regime} has no version {to_version}") from exc
        if to_version == current:
            raise ValueError(f"{regime} v{to_version} is already current")
        if row.status not in (VersionStatus.SUPERSEDED, VersionStatus.ROLLED_BACK):
            raise ValueError(
                f"{regime} v{to_version} was never promoted (status {row.status} at "
                f"{row.stage}); only a version that was current can be restored"
            )
        return to_version

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
        _trigger(trigger)
        at = at or datetime.now(UTC)
        current = self._current_number(regime)
        target = self._target(regime, to_version, current)
        if current is not None:
            self._set(
                regime, current, status=VersionStatus.ROLLED_BACK, reason=reason, updated_at=at
            )
        self._set(
            regime,
            target,
            status=VersionStatus.CURRENT,
            stage=Stage.FULL,
            stage_entered_at=at,
            stage_marks=None,
            stage_run_id=run_id,
            updated_at=at,
        )
        self._trail(
            regime=regime,
            version=target,
            from_version=current,
            to_version=target,
            action=Action.ROLLBACK,
            from_stage=Stage.FULL,
            to_stage=Stage.FULL,
            why=_Why(reason, trigger, run_id, at, metrics, checks),
        )
        return target

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
        _trigger(trigger)
        at = at or datetime.now(UTC)
        current = self._current_number(regime)
        if current is None:
            raise ValueError(f"regime {regime} has no current version to suspend")
        self._set(regime, current, status=VersionStatus.ROLLED_BACK, reason=reason, updated_at=at)
        self._trail(
            regime=regime,
            version=current,
            from_version=current,
            to_version=None,
            action=Action.SUSPEND,
            from_stage=Stage.FULL,
            to_stage=Stage.FULL,
            why=_Why(reason, trigger, run_id, at, metrics, checks),
        )
        return current

    def start_watch(self, regime: str, version: int, data_marks: Marks) -> None:
        if self._current_number(regime) != version:
            raise ValueError(f"{regime} v{version} is not the current version")
        self._set(regime, version, stage_marks=dict(data_marks), updated_at=datetime.now(UTC))

    def set_mlflow_model_version(self, regime: str, version: int, model_version: int) -> None:
        self._set(regime, version, mlflow_model_version=model_version, updated_at=datetime.now(UTC))
