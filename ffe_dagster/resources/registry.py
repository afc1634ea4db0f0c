"""The versioned registry of promoted parameters, in the same database as the Optuna studies.

``parameter_versions`` keeps every version a cycle produced, with its stage (COLD, WARM, LIMITED,
FULL) and status:

- ``candidate``: in flight, at stage WARM or LIMITED;
- ``current``: the regime's FULL set (at most one per regime);
- ``superseded``: was current, replaced by a newer promotion;
- ``rejected``: failed the gate of its ``stage``;
- ``rolled_back``: was current, taken back by a rollback (or suspended with nothing to return to).

``parameter_transitions`` is the audit trail: one row per decision about a version (advance,
wait, reject, promote, rollback, suspend) with the stage it left and entered, its reason, the
checks and metrics behind it, what triggered it (schedule, sensor, manual, automatic-rollback)
and the Dagster run id. ``from_version`` / ``to_version`` are the regime's current version before
and after the decision.

Columns added since the first schema are nullable and added in place to an existing database
(``_add_missing_columns``), so a registry written by an older release keeps working.
"""

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from dagster import ConfigurableResource

STATUS_CANDIDATE = "candidate"
STATUS_CURRENT = "current"
STATUS_SUPERSEDED = "superseded"
STATUS_REJECTED = "rejected"
STATUS_ROLLED_BACK = "rolled_back"
STAGES = ("COLD", "WARM", "LIMITED", "FULL")
TRIGGERS = ("schedule", "sensor", "manual", "automatic-rollback")

_META = sa.MetaData()
VERSIONS = sa.Table(
    "parameter_versions",
    _META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("regime", sa.String(16), nullable=False, index=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("level", sa.Integer, nullable=False),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("metrics", sa.Text, nullable=False),  # the COLD gate's metrics
    sa.Column("stage", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),  # the latest decision about this version
    sa.Column("trigger", sa.String(32), nullable=False),
    sa.Column("run_id", sa.String(64)),  # the run that made the version
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("direction", sa.String(8)),
    sa.Column("source_run_id", sa.String(64)),  # the MLflow run of the study it came from
    sa.Column("candidate_number", sa.Integer),  # its trial number in that study
    sa.Column("data_marks", sa.Text),  # per instrument, the newest bar it had seen when made
    sa.Column("stage_entered_at", sa.DateTime(timezone=True)),
    sa.Column("stage_marks", sa.Text),  # per instrument, the newest bar when it entered FULL
    sa.Column("stage_metrics", sa.Text),  # metrics of the latest decision
    sa.Column("stage_run_id", sa.String(64)),  # the run that moved it into its stage
    sa.Column("mlflow_model_version", sa.Integer),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
    sa.UniqueConstraint("regime", "version"),
)
TRANSITIONS = sa.Table(
    "parameter_transitions",
    _META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("regime", sa.String(16), nullable=False, index=True),
    sa.Column("from_version", sa.Integer),
    sa.Column("to_version", sa.Integer),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("trigger", sa.String(32), nullable=False),
    sa.Column("run_id", sa.String(64)),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("version", sa.Integer),
    sa.Column("from_stage", sa.String(16)),
    sa.Column("to_stage", sa.String(16)),
    sa.Column("metrics", sa.Text),
    sa.Column("checks", sa.Text),
)
_JSON_COLUMNS = ("params", "metrics", "data_marks", "stage_marks", "stage_metrics", "checks")
_TIME_COLUMNS = ("created_at", "stage_entered_at", "updated_at", "at")
Marks = Mapping[str, datetime]


def _add_missing_columns(engine: sa.Engine) -> None:
    """Add the nullable columns a registry of an older release lacks (no other migration)."""
    inspector = sa.inspect(engine)
    with engine.begin() as con:
        for table in _META.sorted_tables:
            existing = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in existing:
                    continue
                if not column.nullable:
                    raise RuntimeError(
                        f"registry table {table.name} lacks the required column {column.name}; "
                        "it was written by an incompatible release"
                    )
                kind = column.type.compile(dialect=engine.dialect)
                con.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}"))


def _marks_json(marks: Marks | None) -> str | None:
    if marks is None:
        return None
    return json.dumps({k: v.isoformat() for k, v in sorted(marks.items())})


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def _check_trigger(trigger: str) -> None:
    if trigger not in TRIGGERS:
        raise ValueError(f"trigger must be one of {TRIGGERS}, got {trigger!r}")


class ParameterRegistryResource(ConfigurableResource):
    """SQL registry (SQLite by default, PostgreSQL in production) of parameter versions."""

    url: str

    @contextmanager
    def _connect(self, write: bool) -> Iterator[sa.Connection]:
        if self.url.startswith("sqlite:///"):
            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(self.url)
        try:
            _META.create_all(engine)
            _add_missing_columns(engine)
            with engine.begin() if write else engine.connect() as con:
                yield con
        finally:
            engine.dispose()

    # --- reading -------------------------------------------------------------------------------

    def current(self, regime: str) -> dict[str, Any] | None:
        """The current (FULL) version of ``regime``, or None when there is none."""
        with self._connect(write=False) as con:
            row = _one(con, regime, status=STATUS_CURRENT)
        return _decode(row) if row else None

    def version(self, regime: str, version: int) -> dict[str, Any]:
        """One version of ``regime``; ``KeyError`` when it does not exist."""
        with self._connect(write=False) as con:
            row = _one(con, regime, version=version)
        if row is None:
            raise KeyError(f"regime {regime} has no version {version}")
        return _decode(row)

    def in_flight(self, regime: str) -> list[dict[str, Any]]:
        """The versions of ``regime`` in flight (stage WARM or LIMITED), oldest first."""
        query = (
            sa.select(VERSIONS)
            .where(VERSIONS.c.regime == regime, VERSIONS.c.status == STATUS_CANDIDATE)
            .order_by(VERSIONS.c.version)
        )
        with self._connect(write=False) as con:
            return [_decode(r) for r in con.execute(query).mappings()]

    def history(self, regime: str | None = None) -> list[dict[str, Any]]:
        """Every version (of one regime when given), by regime then version."""
        query = sa.select(VERSIONS).order_by(VERSIONS.c.regime, VERSIONS.c.version)
        if regime is not None:
            query = query.where(VERSIONS.c.regime == regime)
        with self._connect(write=False) as con:
            return [_decode(r) for r in con.execute(query).mappings()]

    def transitions(self, regime: str | None = None) -> list[dict[str, Any]]:
        """The audit trail (of one regime when given), oldest first."""
        query = sa.select(TRANSITIONS).order_by(TRANSITIONS.c.id)
        if regime is not None:
            query = query.where(TRANSITIONS.c.regime == regime)
        with self._connect(write=False) as con:
            return [_decode(r) for r in con.execute(query).mappings()]

    # --- writing -------------------------------------------------------------------------------

    def record(
        self,
        *,
        regime: str,
        level: int,
        params: Mapping[str, Any],
        metrics: Mapping[str, Any],
        stage: str,
        promoted: bool,
        reason: str,
        trigger: str,
        run_id: str | None,
    ) -> int:
        """Store a version in one step: current at once when ``promoted`` (the old current is
        superseded), else rejected at ``stage``. The staged path is ``add_candidate`` and
        ``advance``; this one stays for imports and tests of a finished decision."""
        _check_trigger(trigger)
        now = datetime.now(UTC)
        with self._connect(write=True) as con:
            version = _next_version(con, regime)
            previous = _current_number(con, regime)
            if promoted:
                _supersede_current(con, regime, now)
            con.execute(
                VERSIONS.insert().values(
                    regime=regime,
                    version=version,
                    level=level,
                    params=_json(dict(params)),
                    metrics=_json(dict(metrics)),
                    stage="FULL" if promoted else stage,
                    status=STATUS_CURRENT if promoted else STATUS_REJECTED,
                    reason=reason,
                    trigger=trigger,
                    run_id=run_id,
                    created_at=now,
                    stage_entered_at=now,
                    stage_run_id=run_id,
                    updated_at=now,
                )
            )
            _transition(
                con,
                regime=regime,
                version=version,
                from_version=previous,
                to_version=version if promoted else previous,
                action="promote" if promoted else "reject",
                from_stage=stage,
                to_stage="FULL" if promoted else stage,
                reason=reason,
                trigger=trigger,
                run_id=run_id,
                metrics=metrics,
                checks=None,
                at=now,
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
        _check_trigger(trigger)
        now = at or datetime.now(UTC)
        stage = "WARM" if passed else "COLD"
        with self._connect(write=True) as con:
            version = _next_version(con, regime)
            current = _current_number(con, regime)
            con.execute(
                VERSIONS.insert().values(
                    regime=regime,
                    version=version,
                    level=level,
                    direction=direction,
                    params=_json(dict(params)),
                    metrics=_json(dict(metrics)),
                    stage=stage,
                    status=STATUS_CANDIDATE if passed else STATUS_REJECTED,
                    reason=reason,
                    trigger=trigger,
                    run_id=run_id,
                    created_at=now,
                    source_run_id=source_run_id,
                    candidate_number=candidate_number,
                    data_marks=_marks_json(data_marks),
                    stage_entered_at=now,
                    stage_marks=_marks_json(data_marks),
                    stage_metrics=_json(dict(metrics)),
                    stage_run_id=run_id,
                    updated_at=now,
                )
            )
            _transition(
                con,
                regime=regime,
                version=version,
                from_version=current,
                to_version=current,
                action="advance" if passed else "reject",
                from_stage="COLD",
                to_stage=stage,
                reason=reason,
                trigger=trigger,
                run_id=run_id,
                metrics=metrics,
                checks=checks,
                at=now,
            )
        return version

    def advance(
        self,
        *,
        regime: str,
        version: int,
        to_stage: str,
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
        _check_trigger(trigger)
        now = at or datetime.now(UTC)
        with self._connect(write=True) as con:
            row = _one(con, regime, version=version)
            if row is None or row["status"] != STATUS_CANDIDATE:
                raise ValueError(f"{regime} v{version} is not in flight")
            from_stage = row["stage"]
            expected = {"WARM": "LIMITED", "LIMITED": "FULL"}.get(from_stage)
            if to_stage != expected:
                raise ValueError(f"{regime} v{version} at {from_stage} cannot move to {to_stage}")
            previous = _current_number(con, regime)
            full = to_stage == "FULL"
            if full:
                _supersede_current(con, regime, now)
            con.execute(
                VERSIONS.update()
                .where(VERSIONS.c.regime == regime, VERSIONS.c.version == version)
                .values(
                    stage=to_stage,
                    status=STATUS_CURRENT if full else STATUS_CANDIDATE,
                    reason=reason,
                    stage_entered_at=now,
                    stage_marks=_marks_json(data_marks) if full else row["stage_marks"],
                    stage_metrics=_json(dict(metrics)),
                    stage_run_id=run_id,
                    updated_at=now,
                )
            )
            _transition(
                con,
                regime=regime,
                version=version,
                from_version=previous,
                to_version=version if full else previous,
                action="promote" if full else "advance",
                from_stage=from_stage,
                to_stage=to_stage,
                reason=reason,
                trigger=trigger,
                run_id=run_id,
                metrics=metrics,
                checks=checks,
                at=now,
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
        self._decide(regime, version, "wait", reason, metrics, checks, trigger, run_id, at)

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
        self._decide(regime, version, "reject", reason, metrics, checks, trigger, run_id, at)

    def _decide(
        self,
        regime: str,
        version: int,
        action: str,
        reason: str,
        metrics: Mapping[str, Any],
        checks: Sequence[Mapping[str, Any]],
        trigger: str,
        run_id: str | None,
        at: datetime | None,
    ) -> None:
        _check_trigger(trigger)
        now = at or datetime.now(UTC)
        with self._connect(write=True) as con:
            row = _one(con, regime, version=version)
            if row is None or row["status"] != STATUS_CANDIDATE:
                raise ValueError(f"{regime} v{version} is not in flight")
            values: dict[str, Any] = {
                "reason": reason,
                "stage_metrics": _json(dict(metrics)),
                "updated_at": now,
            }
            if action == "reject":
                values["status"] = STATUS_REJECTED
            con.execute(
                VERSIONS.update()
                .where(VERSIONS.c.regime == regime, VERSIONS.c.version == version)
                .values(**values)
            )
            current = _current_number(con, regime)
            _transition(
                con,
                regime=regime,
                version=version,
                from_version=current,
                to_version=current,
                action=action,
                from_stage=row["stage"],
                to_stage=row["stage"],
                reason=reason,
                trigger=trigger,
                run_id=run_id,
                metrics=metrics,
                checks=checks,
                at=now,
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
        _check_trigger(trigger)
        now = at or datetime.now(UTC)
        with self._connect(write=True) as con:
            current = _current_number(con, regime)
            target = (
                _explicit_target(con, regime, to_version, current)
                if to_version is not None
                else _previous_promoted(con, regime, current)
            )
            if current is not None:
                _set_status(con, regime, current, STATUS_ROLLED_BACK, reason, now)
            con.execute(
                VERSIONS.update()
                .where(VERSIONS.c.regime == regime, VERSIONS.c.version == target)
                .values(
                    status=STATUS_CURRENT,
                    stage="FULL",
                    stage_entered_at=now,
                    stage_marks=None,
                    stage_run_id=run_id,
                    updated_at=now,
                )
            )
            _transition(
                con,
                regime=regime,
                version=target,
                from_version=current,
                to_version=target,
                action="rollback",
                from_stage="FULL",
                to_stage="FULL",
                reason=reason,
                trigger=trigger,
                run_id=run_id,
                metrics=metrics,
                checks=checks,
                at=now,
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
        _check_trigger(trigger)
        now = at or datetime.now(UTC)
        with self._connect(write=True) as con:
            current = _current_number(con, regime)
            if current is None:
                raise ValueError(f"regime {regime} has no current version to suspend")
            _set_status(con, regime, current, STATUS_ROLLED_BACK, reason, now)
            _transition(
                con,
                regime=regime,
                version=current,
                from_version=current,
                to_version=None,
                action="suspend",
                from_stage="FULL",
                to_stage="FULL",
                reason=reason,
                trigger=trigger,
                run_id=run_id,
                metrics=metrics,
                checks=checks,
                at=now,
            )
        return current

    def start_watch(self, regime: str, version: int, data_marks: Marks) -> None:
        """Set where the safety watch of the current version starts (after a rollback restored
        it, or for a version promoted before the watch existed)."""
        with self._connect(write=True) as con:
            done = con.execute(
                VERSIONS.update()
                .where(
                    VERSIONS.c.regime == regime,
                    VERSIONS.c.version == version,
                    VERSIONS.c.status == STATUS_CURRENT,
                )
                .values(stage_marks=_marks_json(data_marks), updated_at=datetime.now(UTC))
            )
            if done.rowcount != 1:
                raise ValueError(f"{regime} v{version} is not the current version")

    def set_mlflow_model_version(self, regime: str, version: int, model_version: int) -> None:
        """Remember which MLflow model-registry version holds this parameter version."""
        with self._connect(write=True) as con:
            done = con.execute(
                VERSIONS.update()
                .where(VERSIONS.c.regime == regime, VERSIONS.c.version == version)
                .values(mlflow_model_version=model_version, updated_at=datetime.now(UTC))
            )
            if done.rowcount != 1:
                raise KeyError(f"regime {regime} has no version {version}")


# --- helpers inside one transaction -------------------------------------------------------------


def _one(
    con: sa.Connection, regime: str, *, status: str | None = None, version: int | None = None
) -> sa.RowMapping | None:
    query = sa.select(VERSIONS).where(VERSIONS.c.regime == regime)
    if status is not None:
        query = query.where(VERSIONS.c.status == status)
    if version is not None:
        query = query.where(VERSIONS.c.version == version)
    return con.execute(query).mappings().first()


def _next_version(con: sa.Connection, regime: str) -> int:
    last = con.execute(
        sa.select(sa.func.max(VERSIONS.c.version)).where(VERSIONS.c.regime == regime)
    ).scalar()
    return int(last or 0) + 1


def _current_number(con: sa.Connection, regime: str) -> int | None:
    found = con.execute(
        sa.select(VERSIONS.c.version).where(
            VERSIONS.c.regime == regime, VERSIONS.c.status == STATUS_CURRENT
        )
    ).scalar()
    return None if found is None else int(found)


def _supersede_current(con: sa.Connection, regime: str, now: datetime) -> None:
    con.execute(
        VERSIONS.update()
        .where(VERSIONS.c.regime == regime, VERSIONS.c.status == STATUS_CURRENT)
        .values(status=STATUS_SUPERSEDED, updated_at=now)
    )


def _set_status(
    con: sa.Connection, regime: str, version: int, status: str, reason: str, now: datetime
) -> None:
    con.execute(
        VERSIONS.update()
        .where(VERSIONS.c.regime == regime, VERSIONS.c.version == version)
        .values(status=status, reason=reason, updated_at=now)
    )


def _previous_promoted(con: sa.Connection, regime: str, current: int | None) -> int:
    query = sa.select(sa.func.max(VERSIONS.c.version)).where(
        VERSIONS.c.regime == regime, VERSIONS.c.status == STATUS_SUPERSEDED
    )
    if current is not None:
        query = query.where(VERSIONS.c.version < current)
    target = con.execute(query).scalar()
    if target is None:
        raise ValueError(f"regime {regime} has no earlier promoted version to return to")
    return int(target)


def _explicit_target(con: sa.Connection, regime: str, target: int, current: int | None) -> int:
    row = _one(con, regime, version=target)
    if row is None:
        raise ValueError(f"regime {regime} has no version {target}")
    if target == current:
        raise ValueError(f"{regime} v{target} is already current")
    if row["status"] not in (STATUS_SUPERSEDED, STATUS_ROLLED_BACK):
        raise ValueError(
            f"{regime} v{target} was never promoted (status {row['status']} at {row['stage']}); "
            "only a version that was current can be restored"
        )
    return target


def _transition(
    con: sa.Connection,
    *,
    regime: str,
    version: int,
    from_version: int | None,
    to_version: int | None,
    action: str,
    from_stage: str,
    to_stage: str,
    reason: str,
    trigger: str,
    run_id: str | None,
    metrics: Mapping[str, Any] | None,
    checks: Sequence[Mapping[str, Any]] | None,
    at: datetime,
) -> None:
    con.execute(
        TRANSITIONS.insert().values(
            regime=regime,
            version=version,
            from_version=from_version,
            to_version=to_version,
            action=action,
            from_stage=from_stage,
            to_stage=to_stage,
            reason=reason,
            trigger=trigger,
            run_id=run_id,
            metrics=_json(None if metrics is None else dict(metrics)),
            checks=_json(None if checks is None else [dict(c) for c in checks]),
            at=at,
        )
    )


def _decode(row: Mapping[Any, Any]) -> dict[str, Any]:
    out = dict(row)
    for name in _JSON_COLUMNS:
        if name in out and out[name] is not None:
            out[name] = json.loads(out[name])
    for name in ("data_marks", "stage_marks"):
        if out.get(name) is not None:
            out[name] = {k: datetime.fromisoformat(v) for k, v in out[name].items()}
    for name in _TIME_COLUMNS:
        # SQLite hands back naive datetimes; every time stored here is UTC.
        value = out.get(name)
        if isinstance(value, datetime) and value.tzinfo is None:
            out[name] = value.replace(tzinfo=UTC)
    return out
