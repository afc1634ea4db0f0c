"""The tables of the parameter registry, their in-place upgrade, and how values are stored.

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

The stored strings are the values of ``core/promotion/records``' enums (``VersionStatus``,
``Action``, ``RegimeAction``, ``Trigger``) and of ``Stage``; rows are read back as that module's
records. Columns added since the first schema are nullable and added in place to an existing
database (``add_missing_columns``), so a registry written by an older release keeps working.
"""

import json
from typing import Any

import sqlalchemy as sa

from ffe_dagster.core.promotion.config import Stage
from ffe_dagster.core.promotion.records import Marks, Trigger, marks_to_json

STAGES = tuple(s.value for s in Stage)
TRIGGERS = tuple(t.value for t in Trigger)

METADATA = sa.MetaData()
VERSIONS = sa.Table(
    "parameter_versions",
    METADATA,
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
    METADATA,
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
# Decisions about a regime that create no version, one per regime and cycle: a level that did
# not pass blocks its regimes (action ``blocked``), COLD waits for bars no earlier COLD test used
# (``wait``), or has nothing new to judge (``skip``).
REGIME_DECISIONS = sa.Table(
    "regime_decisions",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("regime", sa.String(16), nullable=False, index=True),
    sa.Column("level", sa.Integer, nullable=False),
    sa.Column("stage", sa.String(16), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("trigger", sa.String(32), nullable=False),
    sa.Column("run_id", sa.String(64)),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)
# The bars each COLD test judged, per regime and instrument: a later COLD test of the regime only
# uses bars after the newest ``last_bar`` here, so no bar tests two candidates (repeated testing).
COLD_BARS = sa.Table(
    "cold_bars_used",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("regime", sa.String(16), nullable=False, index=True),
    sa.Column("instrument", sa.String(64), nullable=False),
    sa.Column("first_bar", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_bar", sa.DateTime(timezone=True), nullable=False),
    sa.Column("version", sa.Integer),  # the version the COLD decision stored
    sa.Column("tested", sa.Text),  # JSON list of every parameter set judged on these bars
    sa.Column("run_id", sa.String(64)),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)
# Notifications wait here until the webhook took them (``resources/outbox.py``): a row is written
# in the transaction of the decision it announces, so a decision is never left unannounced.
OUTBOX = sa.Table(
    "notification_outbox",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(200), nullable=False, unique=True),  # the idempotency key
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending or sent
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("claimed_until", sa.DateTime(timezone=True)),  # a deliverer holds it until then
    sa.Column("delivered_at", sa.DateTime(timezone=True)),
    sa.Column("last_error", sa.Text),
)
OUTBOX_ATTEMPTS = sa.Table(
    "notification_attempts",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("outbox_id", sa.Integer, sa.ForeignKey("notification_outbox.id"), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("http_status", sa.Integer),
    sa.Column("error", sa.Text),
)


def add_missing_columns(engine: sa.Engine) -> None:
    """Add the nullable columns a registry of an older release lacks (no other migration)."""
    inspector = sa.inspect(engine)
    with engine.begin() as con:
        for table in METADATA.sorted_tables:
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


def marks_json(marks: Marks | None) -> str | None:
    """``marks`` as stored: a JSON object of ISO-8601 instants, or None."""
    found = marks_to_json(marks)
    return None if found is None else json.dumps(found)


def to_json(value: Any) -> str | None:
    """``value`` as stored in a JSON text column, or None."""
    return None if value is None else json.dumps(value, sort_keys=True, default=str)
