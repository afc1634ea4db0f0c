"""The notification outbox, in the registry's database: enqueue inside a decision's transaction,
claim the rows that are due, record each delivery attempt, count what is where.

A row is ``pending`` until one attempt succeeds, then ``sent``; a failed attempt schedules the
next one (``retry_delay_s`` in ``core/reporting/notifications.py``) and a row is never dropped,
so a notification made while the endpoint is down is delivered when it is back. A row is
claimed (``claimed_until``) before it is posted, so two deliverers (the delivery sensor and the
run-failure sensor) never post the same row at once; its key goes with every attempt for the
receiver to drop a repeat (a post that succeeded but whose answer was lost is posted again).
"""

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ffe_dagster.core.promotion.config import Stage
from ffe_dagster.core.promotion.records import Action, ParameterVersion
from ffe_dagster.core.reporting.notifications import (
    DecisionFacts,
    DeliveryCounts,
    Notification,
    decision_notification,
)
from ffe_dagster.resources.registry_schema import OUTBOX, OUTBOX_ATTEMPTS, VERSIONS

STATUS_PENDING = "pending"
STATUS_SENT = "sent"
Connect = Callable[[bool], AbstractContextManager[sa.Connection]]


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time stored here is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def enqueue(con: sa.Connection, notification: Notification) -> bool:
    """Add ``notification`` in the caller's transaction; False when its key is already there
    (the same decision or run announced once)."""
    found = con.execute(sa.select(OUTBOX.c.id).where(OUTBOX.c.key == notification.key)).first()
    if found is not None:
        return False
    con.execute(
        OUTBOX.insert().values(
            key=notification.key,
            kind=notification.kind.value,
            payload=json.dumps(notification.to_payload(), default=str),
            status=STATUS_PENDING,
            attempts=0,
            created_at=notification.at,
            next_attempt_at=notification.at,
        )
    )
    return True


def _version_row(con: sa.Connection, regime: str, version: int | None) -> ParameterVersion | None:
    if version is None:
        return None
    row = (
        con.execute(
            sa.select(VERSIONS).where(VERSIONS.c.regime == regime, VERSIONS.c.version == version)
        )
        .mappings()
        .first()
    )
    return None if row is None else ParameterVersion.from_row(row)


def enqueue_decision(
    con: sa.Connection,
    *,
    transition_id: int,
    regime: str,
    version: int,
    action: Action,
    from_stage: Stage,
    to_stage: Stage,
    from_version: int | None,
    to_version: int | None,
    reason: str,
    trigger: str,
    run_id: str | None,
    at: datetime,
    metrics: Mapping[str, Any] | None,
    checks: Any,
) -> None:
    """Announce one audit-trail decision (when it is one that matters) in its transaction."""
    subject = _version_row(con, regime, version)
    before = _version_row(con, regime, from_version)
    facts = DecisionFacts(
        transition_id=transition_id,
        regime=regime,
        action=action,
        version=version,
        from_stage=from_stage,
        to_stage=to_stage,
        version_before=from_version,
        version_after=to_version,
        params_before=None if before is None else before.params,
        params_after=None if subject is None or action is Action.SUSPEND else subject.params,
        reason=reason,
        trigger=trigger,
        run_id=run_id,
        at=at,
        level=None if subject is None else subject.level,
        mlflow_run_id=None if subject is None else subject.source_run_id,
        metrics=metrics,
        checks=checks,
    )
    notification = decision_notification(facts)
    if notification is not None:
        enqueue(con, notification)


@dataclass(frozen=True, slots=True)
class Due:
    """A claimed notification, ready to post."""

    id: int
    key: str
    attempts: int
    payload: dict[str, Any]


class Outbox:
    """The outbox of one registry database; ``connect(write)`` opens a transaction on it."""

    def __init__(self, connect: Connect) -> None:
        self._connect = connect

    def add(self, notification: Notification) -> bool:
        """Enqueue ``notification`` on its own (not a registry decision); False if known."""
        with self._connect(True) as con:
            return enqueue(con, notification)

    def claim_due(self, now: datetime, *, lease: timedelta, limit: int = 50) -> Iterator[Due]:
        """The pending rows whose next attempt is due, oldest first, each claimed for ``lease``
        just before it is yielded (a row another deliverer holds is passed over)."""
        with self._connect(False) as con:
            ids = list(
                con.execute(
                    sa.select(OUTBOX.c.id)
                    .where(OUTBOX.c.status == STATUS_PENDING, OUTBOX.c.next_attempt_at <= now)
                    .order_by(OUTBOX.c.id)
                    .limit(limit)
                ).scalars()
            )
        for row_id in ids:
            due = self._claim(row_id, now, lease)
            if due is not None:
                yield due

    def _claim(self, row_id: int, now: datetime, lease: timedelta) -> Due | None:
        free = sa.or_(OUTBOX.c.claimed_until.is_(None), OUTBOX.c.claimed_until < now)
        with self._connect(True) as con:
            done = con.execute(
                OUTBOX.update()
                .where(OUTBOX.c.id == row_id, OUTBOX.c.status == STATUS_PENDING, free)
                .values(claimed_until=now + lease)
            )
            if done.rowcount != 1:
                return None
            row = con.execute(sa.select(OUTBOX).where(OUTBOX.c.id == row_id)).mappings().one()
        return Due(row_id, row["key"], int(row["attempts"]), json.loads(row["payload"]))

    def record(
        self,
        due: Due,
        *,
        at: datetime,
        ok: bool,
        http_status: int | None,
        error: str | None,
        retry_in: timedelta,
    ) -> None:
        """Store one attempt at ``due`` and release it: sent, or due again after ``retry_in``."""
        attempt = due.attempts + 1
        values: dict[str, Any] = {"attempts": attempt, "claimed_until": None}
        if ok:
            values |= {"status": STATUS_SENT, "delivered_at": at, "last_error": None}
        else:
            values |= {"next_attempt_at": at + retry_in, "last_error": error}
        with self._connect(True) as con:
            con.execute(
                OUTBOX_ATTEMPTS.insert().values(
                    outbox_id=due.id,
                    attempt=attempt,
                    at=at,
                    ok=ok,
                    http_status=http_status,
                    error=error,
                )
            )
            con.execute(OUTBOX.update().where(OUTBOX.c.id == due.id).values(**values))

    def counts(self) -> DeliveryCounts:
        """Sent, pending, retried and failed (see ``DeliveryCounts``)."""
        with self._connect(False) as con:
            by_status = dict(
                con.execute(
                    sa.select(OUTBOX.c.status, sa.func.count()).group_by(OUTBOX.c.status)
                ).all()
            )
            retried = con.execute(
                sa.select(sa.func.count())
                .select_from(OUTBOX)
                .where(
                    sa.or_(
                        OUTBOX.c.attempts > 1,
                        sa.and_(OUTBOX.c.status == STATUS_PENDING, OUTBOX.c.attempts >= 1),
                    )
                )
            ).scalar_one()
            failed = con.execute(
                sa.select(sa.func.count())
                .select_from(OUTBOX_ATTEMPTS)
                .where(OUTBOX_ATTEMPTS.c.ok.is_(False))
            ).scalar_one()
        return DeliveryCounts(
            sent=int(by_status.get(STATUS_SENT, 0)),
            pending=int(by_status.get(STATUS_PENDING, 0)),
            retried=int(retried),
            failed=int(failed),
        )

    def oldest_pending(self) -> tuple[datetime, str | None] | None:
        """When the oldest undelivered notification was made, and its last error."""
        with self._connect(False) as con:
            row = con.execute(
                sa.select(OUTBOX.c.created_at, OUTBOX.c.last_error)
                .where(OUTBOX.c.status == STATUS_PENDING)
                .order_by(OUTBOX.c.created_at)
                .limit(1)
            ).first()
        return None if row is None else (_aware(row[0]), row[1])

    def rows(self) -> list[dict[str, Any]]:
        """Every notification with its status, oldest first (for the CLI and tests)."""
        with self._connect(False) as con:
            found = con.execute(sa.select(OUTBOX).order_by(OUTBOX.c.id)).mappings().all()
        return [{**dict(r), "payload": json.loads(r["payload"])} for r in found]

    def attempts(self) -> list[dict[str, Any]]:
        """Every delivery attempt, oldest first."""
        with self._connect(False) as con:
            found = con.execute(
                sa.select(OUTBOX_ATTEMPTS).order_by(OUTBOX_ATTEMPTS.c.id)
            ).mappings()
            return [dict(r) for r in found]
