"""The versioned registry of promoted parameters, in the same database as the Optuna studies.

Every candidate version is kept with its stage, metrics, reason and the run that made it;
every change of the current version per regime is a row in ``parameter_transitions``.
"""

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from dagster import ConfigurableResource

_META = sa.MetaData()
VERSIONS = sa.Table(
    "parameter_versions",
    _META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("regime", sa.String(16), nullable=False, index=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("level", sa.Integer, nullable=False),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("metrics", sa.Text, nullable=False),
    sa.Column("stage", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("trigger", sa.String(32), nullable=False),
    sa.Column("run_id", sa.String(64)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
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
)


class ParameterRegistryResource(ConfigurableResource):
    """SQL registry (SQLite by default, PostgreSQL in production) of parameter versions."""

    url: str

    def _engine(self) -> sa.Engine:
        if self.url.startswith("sqlite:///"):
            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(self.url)
        _META.create_all(engine)
        return engine

    def current(self, regime: str) -> dict[str, Any] | None:
        """The current version of ``regime``, or None when nothing was ever promoted."""
        with self._engine().connect() as con:
            row = (
                con.execute(
                    sa.select(VERSIONS).where(
                        VERSIONS.c.regime == regime, VERSIONS.c.status == "current"
                    )
                )
                .mappings()
                .first()
            )
        return _decode(row) if row else None

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
        """Store a new version; when ``promoted`` it becomes current and the old one superseded."""
        now = datetime.now(UTC)
        with self._engine().begin() as con:
            last = con.execute(
                sa.select(sa.func.max(VERSIONS.c.version)).where(VERSIONS.c.regime == regime)
            ).scalar()
            version = int(last or 0) + 1
            previous = con.execute(
                sa.select(VERSIONS.c.version).where(
                    VERSIONS.c.regime == regime, VERSIONS.c.status == "current"
                )
            ).scalar()
            if promoted:
                con.execute(
                    VERSIONS.update()
                    .where(VERSIONS.c.regime == regime, VERSIONS.c.status == "current")
                    .values(status="superseded")
                )
            con.execute(
                VERSIONS.insert().values(
                    regime=regime,
                    version=version,
                    level=level,
                    params=json.dumps(dict(params), sort_keys=True),
                    metrics=json.dumps(dict(metrics), sort_keys=True),
                    stage=stage,
                    status="current" if promoted else "rejected",
                    reason=reason,
                    trigger=trigger,
                    run_id=run_id,
                    created_at=now,
                )
            )
            con.execute(
                TRANSITIONS.insert().values(
                    regime=regime,
                    from_version=previous,
                    to_version=version if promoted else previous,
                    action="promote" if promoted else "reject",
                    reason=reason,
                    trigger=trigger,
                    run_id=run_id,
                    at=now,
                )
            )
        return version

    def rollback(self, regime: str, *, reason: str, trigger: str, run_id: str | None) -> int:
        """Make the version promoted before the current one current again; returns it."""
        now = datetime.now(UTC)
        with self._engine().begin() as con:
            current = con.execute(
                sa.select(VERSIONS.c.version).where(
                    VERSIONS.c.regime == regime, VERSIONS.c.status == "current"
                )
            ).scalar()
            if current is None:
                raise ValueError(f"regime {regime} has no current version to roll back")
            target = con.execute(
                sa.select(sa.func.max(VERSIONS.c.version)).where(
                    VERSIONS.c.regime == regime,
                    VERSIONS.c.status == "superseded",
                    VERSIONS.c.version < current,
                )
            ).scalar()
            if target is None:
                raise ValueError(f"regime {regime} has no earlier promoted version to return to")
            con.execute(
                VERSIONS.update()
                .where(VERSIONS.c.regime == regime, VERSIONS.c.version == current)
                .values(status="rolled_back")
            )
            con.execute(
                VERSIONS.update()
                .where(VERSIONS.c.regime == regime, VERSIONS.c.version == target)
                .values(status="current")
            )
            con.execute(
                TRANSITIONS.insert().values(
                    regime=regime,
                    from_version=current,
                    to_version=target,
                    action="rollback",
                    reason=reason,
                    trigger=trigger,
                    run_id=run_id,
                    at=now,
                )
            )
        return int(target)

    def history(self, regime: str | None = None) -> list[dict[str, Any]]:
        """Every version (of one regime when given), oldest first."""
        query = sa.select(VERSIONS).order_by(VERSIONS.c.regime, VERSIONS.c.version)
        if regime is not None:
            query = query.where(VERSIONS.c.regime == regime)
        with self._engine().connect() as con:
            return [_decode(r) for r in con.execute(query).mappings()]

    def transitions(self) -> list[dict[str, Any]]:
        """The audit trail of every promotion, rejection and rollback, oldest first."""
        with self._engine().connect() as con:
            rows = con.execute(sa.select(TRANSITIONS).order_by(TRANSITIONS.c.id)).mappings()
            return [dict(r) for r in rows]


def _decode(row: Mapping[Any, Any]) -> dict[str, Any]:
    out = dict(row)
    out["params"] = json.loads(out["params"])
    out["metrics"] = json.loads(out["metrics"])
    return out
