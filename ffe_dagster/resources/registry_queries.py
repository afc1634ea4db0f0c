"""The statements of the parameter registry, each run inside the caller's transaction.

``ParameterRegistryResource`` (``ffe_dagster.resources.registry``) opens the transaction and
decides; these helpers read and write the rows of ``registry_schema``'s tables, and
``transition`` appends the decision to the audit trail.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from ffe_dagster.core.promotion.config import Stage
from ffe_dagster.core.promotion.records import Action, ParameterVersion, VersionStatus
from ffe_dagster.resources.outbox import enqueue_decision
from ffe_dagster.resources.registry_schema import TRANSITIONS, TRIGGERS, VERSIONS, to_json


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What every audit-trail row of one decision shares: why, who, the evidence, when (the
    rest of the row, ``Transition``, says what was decided about which version)."""

    reason: str
    trigger: str
    run_id: str | None
    metrics: Mapping[str, Any] | None
    checks: Sequence[Mapping[str, Any]] | None
    at: datetime


def audit_entry(
    reason: str,
    trigger: str,
    run_id: str | None,
    metrics: Mapping[str, Any] | None,
    checks: Sequence[Mapping[str, Any]] | None,
    at: datetime | None,
) -> AuditEntry:
    """Check ``trigger`` and stamp the decision (now, unless ``at`` is given)."""
    if trigger not in TRIGGERS:
        raise ValueError(f"trigger must be one of {TRIGGERS}, got {trigger!r}")
    return AuditEntry(reason, trigger, run_id, metrics, checks, at or datetime.now(UTC))


def find_version(
    con: sa.Connection,
    regime: str,
    *,
    status: VersionStatus | None = None,
    version: int | None = None,
) -> sa.RowMapping | None:
    query = sa.select(VERSIONS).where(VERSIONS.c.regime == regime)
    if status is not None:
        query = query.where(VERSIONS.c.status == status)
    if version is not None:
        query = query.where(VERSIONS.c.version == version)
    return con.execute(query).mappings().first()


def in_flight_row(con: sa.Connection, regime: str, version: int) -> ParameterVersion:
    row = find_version(con, regime, version=version)
    if row is None or row["status"] != VersionStatus.CANDIDATE:
        raise ValueError(f"{regime} v{version} is not in flight")
    return ParameterVersion.from_row(row)


def next_version(con: sa.Connection, regime: str) -> int:
    last = con.execute(
        sa.select(sa.func.max(VERSIONS.c.version)).where(VERSIONS.c.regime == regime)
    ).scalar()
    return int(last or 0) + 1


def current_number(con: sa.Connection, regime: str) -> int | None:
    found = con.execute(
        sa.select(VERSIONS.c.version).where(
            VERSIONS.c.regime == regime, VERSIONS.c.status == VersionStatus.CURRENT
        )
    ).scalar()
    return None if found is None else int(found)


def insert_version(
    con: sa.Connection,
    d: AuditEntry,
    *,
    regime: str,
    version: int,
    level: int,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    stage: Stage,
    status: VersionStatus,
    **extra: Any,
) -> None:
    """Insert a new version, made and put into ``stage`` by decision ``d``."""
    con.execute(
        VERSIONS.insert().values(
            regime=regime,
            version=version,
            level=level,
            params=to_json(dict(params)),
            metrics=to_json(dict(metrics)),
            stage=stage,
            status=status,
            reason=d.reason,
            trigger=d.trigger,
            run_id=d.run_id,
            created_at=d.at,
            stage_entered_at=d.at,
            stage_run_id=d.run_id,
            updated_at=d.at,
            **extra,
        )
    )


def update_version(
    con: sa.Connection, regime: str, version: int, *where: Any, **values: Any
) -> int:
    """Set ``values`` on one version (when it also meets ``where``); returns the rows changed."""
    done = con.execute(
        VERSIONS.update()
        .where(VERSIONS.c.regime == regime, VERSIONS.c.version == version, *where)
        .values(**values)
    )
    return done.rowcount


def supersede_current(con: sa.Connection, regime: str, now: datetime) -> None:
    con.execute(
        VERSIONS.update()
        .where(VERSIONS.c.regime == regime, VERSIONS.c.status == VersionStatus.CURRENT)
        .values(status=VersionStatus.SUPERSEDED, updated_at=now)
    )


def roll_back(con: sa.Connection, regime: str, version: int, d: AuditEntry) -> None:
    update_version(
        con, regime, version, status=VersionStatus.ROLLED_BACK, reason=d.reason, updated_at=d.at
    )


def previous_promoted(con: sa.Connection, regime: str, current: int | None) -> int:
    query = sa.select(sa.func.max(VERSIONS.c.version)).where(
        VERSIONS.c.regime == regime, VERSIONS.c.status == VersionStatus.SUPERSEDED
    )
    if current is not None:
        query = query.where(VERSIONS.c.version < current)
    target = con.execute(query).scalar()
    if target is None:
        raise ValueError(f"regime {regime} has no earlier promoted version to return to")
    return int(target)


def explicit_target(con: sa.Connection, regime: str, target: int, current: int | None) -> int:
    found = find_version(con, regime, version=target)
    if found is None:
        raise ValueError(f"regime {regime} has no version {target}")
    if target == current:
        raise ValueError(f"{regime} v{target} is already current")
    row = ParameterVersion.from_row(found)
    if row.status not in (VersionStatus.SUPERSEDED, VersionStatus.ROLLED_BACK):
        raise ValueError(
            f"{regime} v{target} was never promoted (status {row.status} at {row.stage}); "
            "only a version that was current can be restored"
        )
    return target


def transition(
    con: sa.Connection,
    d: AuditEntry,
    *,
    regime: str,
    version: int,
    from_version: int | None,
    to_version: int | None,
    action: Action,
    from_stage: Stage,
    to_stage: Stage,
) -> None:
    """Append decision ``d`` about ``version`` to the audit trail, and its notification to the
    outbox in the same transaction (``resources/outbox.py``)."""
    inserted = con.execute(
        TRANSITIONS.insert().values(
            regime=regime,
            version=version,
            from_version=from_version,
            to_version=to_version,
            action=action,
            from_stage=from_stage,
            to_stage=to_stage,
            reason=d.reason,
            trigger=d.trigger,
            run_id=d.run_id,
            metrics=to_json(None if d.metrics is None else dict(d.metrics)),
            checks=to_json(None if d.checks is None else [dict(c) for c in d.checks]),
            at=d.at,
        )
    )
    key = inserted.inserted_primary_key
    if key is None:  # an INSERT of one row always has one; this narrows the type
        raise RuntimeError("the audit-trail insert returned no id")
    enqueue_decision(
        con,
        transition_id=int(key[0]),
        regime=regime,
        version=version,
        action=action,
        from_stage=from_stage,
        to_stage=to_stage,
        from_version=from_version,
        to_version=to_version,
        reason=d.reason,
        trigger=d.trigger,
        run_id=d.run_id,
        at=d.at,
        metrics=d.metrics,
        checks=d.checks,
    )
