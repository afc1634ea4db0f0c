"""What the parameter registry stores and reads back, as typed records: a parameter version, a
transition of the audit trail, and a decision about a regime that stored no version, with the
enums of their status, action and trigger columns.

Pure: ``from_row`` takes a row as the database returns it (JSON in text columns, times naive on
SQLite) and ``to_json`` gives the record as JSON-ready values. The strings stored are the enums'
values, unchanged since the first schema, so a registry written by an older release reads back.
The SQL resource (``resources/registry.py``) runs the queries and converts its rows here.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from ffe_dagster.core.backtest.reference import Direction
from ffe_dagster.core.promotion.checks import GateCheck, checks_as_dicts
from ffe_dagster.core.promotion.config import Stage
from ffe_dagster.core.study.evaluation import Params

Marks = Mapping[str, datetime]


class VersionStatus(StrEnum):
    """Where a version stands among the regime's versions (its ``stage`` says how far it got)."""

    CANDIDATE = "candidate"  # in flight, at stage WARM or LIMITED
    CURRENT = "current"  # the regime's FULL set (at most one per regime)
    SUPERSEDED = "superseded"  # was current, replaced by a newer promotion
    REJECTED = "rejected"  # failed the gate of its stage
    ROLLED_BACK = "rolled_back"  # was current, taken back by a rollback or a suspension


class Action(StrEnum):
    """A decision about a version, as the audit trail records it."""

    ADVANCE = "advance"  # one stage up: COLD -> WARM, WARM -> LIMITED
    WAIT = "wait"  # not judged yet; it stays at its stage
    REJECT = "reject"  # failed the gate of its stage
    PROMOTE = "promote"  # became current (FULL)
    ROLLBACK = "rollback"  # an earlier version made current again
    SUSPEND = "suspend"  # the current version taken back with nothing to return to


class RegimeAction(StrEnum):
    """A decision about a regime that stores no version."""

    BLOCKED = "blocked"  # the level did not pass its criteria: its candidates stay out of COLD
    WAIT = "wait"  # COLD waits for bars no earlier COLD test used
    SKIP = "skip"  # nothing new to judge, or a version is in flight


class Trigger(StrEnum):
    """What made a decision."""

    SCHEDULE = "schedule"
    SENSOR = "sensor"
    MANUAL = "manual"
    AUTOMATIC_ROLLBACK = "automatic-rollback"


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time stored here is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _aware_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else _aware(value)


def _marks(text: str | None) -> dict[str, datetime] | None:
    found = _json(text)
    return None if found is None else {k: datetime.fromisoformat(v) for k, v in found.items()}


def marks_to_json(marks: Marks | None) -> dict[str, str] | None:
    """``marks`` as JSON-ready ISO-8601 instants, sorted by instrument, or None."""
    return None if marks is None else {k: v.isoformat() for k, v in sorted(marks.items())}


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def checks_from_json(found: Sequence[Mapping[str, Any]]) -> tuple[GateCheck, ...]:
    """Stored checks (``GateDecision.checks_as_dicts``) as ``GateCheck``s; ``waiting`` is
    absent from checks written before it existed."""
    return tuple(
        GateCheck(
            name=str(c["name"]),
            value=float(c["value"]),
            threshold=float(c["threshold"]),
            passed=bool(c["passed"]),
            reason=str(c["reason"]),
            waiting=bool(c.get("waiting", False)),
        )
        for c in found
    )


@dataclass(frozen=True, slots=True)
class ParameterVersion:
    """One parameter set a cycle stored for a regime, with how far it got and why.

    ``metrics`` are the COLD gate's, ``stage_metrics`` those of the latest decision about it;
    ``data_marks`` the newest bar per instrument when it was made (its WARM paper trading starts
    there), ``stage_marks`` where the safety watch of a current version starts (None until the
    next cycle sets it). Columns added after the first schema are None in older rows.
    """

    regime: str
    version: int
    level: int
    params: Params
    metrics: Mapping[str, float]
    stage: Stage
    status: VersionStatus
    reason: str
    trigger: Trigger
    run_id: str | None
    created_at: datetime
    direction: Direction | None = None
    source_run_id: str | None = None
    candidate_number: int | None = None
    data_marks: Marks | None = None
    stage_entered_at: datetime | None = None
    stage_marks: Marks | None = None
    stage_metrics: Mapping[str, float] | None = None
    stage_run_id: str | None = None
    mlflow_model_version: int | None = None
    updated_at: datetime | None = None

    @property
    def since(self) -> datetime:
        """When it entered its stage (its creation for rows of the first schema)."""
        return self.stage_entered_at or self.created_at

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> "ParameterVersion":
        """A ``parameter_versions`` row as stored."""
        return cls(
            regime=row["regime"],
            version=int(row["version"]),
            level=int(row["level"]),
            params=json.loads(row["params"]),
            metrics=json.loads(row["metrics"]),
            stage=Stage(row["stage"]),
            status=VersionStatus(row["status"]),
            reason=row["reason"],
            trigger=Trigger(row["trigger"]),
            run_id=row["run_id"],
            created_at=_aware(row["created_at"]),
            direction=None if not row.get("direction") else Direction(row["direction"]),
            source_run_id=row.get("source_run_id"),
            candidate_number=row.get("candidate_number"),
            data_marks=_marks(row.get("data_marks")),
            stage_entered_at=_aware_or_none(row.get("stage_entered_at")),
            stage_marks=_marks(row.get("stage_marks")),
            stage_metrics=_json(row.get("stage_metrics")),
            stage_run_id=row.get("stage_run_id"),
            mlflow_model_version=row.get("mlflow_model_version"),
            updated_at=_aware_or_none(row.get("updated_at")),
        )

    def to_json(self) -> dict[str, Any]:
        """Every field as JSON-ready values (times and marks as ISO-8601, enums as stored)."""
        return {
            "regime": self.regime,
            "version": self.version,
            "level": self.level,
            "params": dict(self.params),
            "metrics": dict(self.metrics),
            "stage": self.stage.value,
            "status": self.status.value,
            "reason": self.reason,
            "trigger": self.trigger.value,
            "run_id": self.run_id,
            "created_at": self.created_at.isoformat(),
            "direction": None if self.direction is None else self.direction.value,
            "source_run_id": self.source_run_id,
            "candidate_number": self.candidate_number,
            "data_marks": marks_to_json(self.data_marks),
            "stage_entered_at": _iso(self.stage_entered_at),
            "stage_marks": marks_to_json(self.stage_marks),
            "stage_metrics": None if self.stage_metrics is None else dict(self.stage_metrics),
            "stage_run_id": self.stage_run_id,
            "mlflow_model_version": self.mlflow_model_version,
            "updated_at": _iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class Transition:
    """One row of the audit trail: a decision about ``version``, the stage it left and entered,
    and the regime's current version before (``from_version``) and after (``to_version``).

    ``metrics`` and ``checks`` are the evidence behind it; empty when none was stored (a manual
    rollback, rows of the first schema)."""

    id: int
    regime: str
    version: int | None
    from_version: int | None
    to_version: int | None
    action: Action
    from_stage: Stage | None
    to_stage: Stage | None
    reason: str
    trigger: Trigger
    run_id: str | None
    at: datetime
    metrics: Mapping[str, float] = field(default_factory=dict[str, float])
    checks: tuple[GateCheck, ...] = ()

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> "Transition":
        """A ``parameter_transitions`` row as stored."""
        from_stage, to_stage = row.get("from_stage"), row.get("to_stage")
        return cls(
            id=int(row["id"]),
            regime=row["regime"],
            version=row.get("version"),
            from_version=row["from_version"],
            to_version=row["to_version"],
            action=Action(row["action"]),
            from_stage=None if from_stage is None else Stage(from_stage),
            to_stage=None if to_stage is None else Stage(to_stage),
            reason=row["reason"],
            trigger=Trigger(row["trigger"]),
            run_id=row["run_id"],
            at=_aware(row["at"]),
            metrics=_json(row.get("metrics")) or {},
            checks=checks_from_json(_json(row.get("checks")) or []),
        )

    def to_json(self) -> dict[str, Any]:
        """Every field as JSON-ready values."""
        return {
            "id": self.id,
            "regime": self.regime,
            "version": self.version,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "action": self.action.value,
            "from_stage": None if self.from_stage is None else self.from_stage.value,
            "to_stage": None if self.to_stage is None else self.to_stage.value,
            "reason": self.reason,
            "trigger": self.trigger.value,
            "run_id": self.run_id,
            "at": self.at.isoformat(),
            "metrics": dict(self.metrics),
            "checks": checks_as_dicts(self.checks),
        }


@dataclass(frozen=True, slots=True)
class RegimeDecision:
    """A decision about a regime that stored no version (``regime_decisions``)."""

    id: int
    regime: str
    level: int
    stage: Stage
    action: RegimeAction
    reason: str
    trigger: Trigger
    run_id: str | None
    at: datetime

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> "RegimeDecision":
        """A ``regime_decisions`` row as stored."""
        return cls(
            id=int(row["id"]),
            regime=row["regime"],
            level=int(row["level"]),
            stage=Stage(row["stage"]),
            action=RegimeAction(row["action"]),
            reason=row["reason"],
            trigger=Trigger(row["trigger"]),
            run_id=row["run_id"],
            at=_aware(row["at"]),
        )

    def to_json(self) -> dict[str, Any]:
        """Every field as JSON-ready values."""
        return {
            "id": self.id,
            "regime": self.regime,
            "level": self.level,
            "stage": self.stage.value,
            "action": self.action.value,
            "reason": self.reason,
            "trigger": self.trigger.value,
            "run_id": self.run_id,
            "at": self.at.isoformat(),
        }
