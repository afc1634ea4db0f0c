"""The registry's reads: versions, the audit trail, decisions and what COLD has judged, as the
records of ``core/promotion/records``.

A mixin of ``ParameterRegistryResource`` (``resources/registry.py``), which supplies the
connection; the changes, each one transaction with its audit row, stay there.
"""

import json
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from ffe_dagster.core.promotion.records import (
    ParameterVersion,
    RegimeDecision,
    Transition,
    VersionStatus,
)
from ffe_dagster.resources.registry_queries import find_version
from ffe_dagster.resources.registry_records import cold_bars_query, cold_tested_query
from ffe_dagster.resources.registry_schema import REGIME_DECISIONS, TRANSITIONS, VERSIONS


class RegistryReads:
    """Read-only queries over the registry's tables."""

    def _connect(self, write: bool) -> AbstractContextManager[sa.Connection]:
        raise NotImplementedError  # the resource's connection

    def _rows(self, query: sa.Select[Any]) -> list[sa.RowMapping]:
        with self._connect(write=False) as con:
            return list(con.execute(query).mappings())

    def current(self, regime: str) -> ParameterVersion | None:
        """The current (FULL) version of ``regime``, or None when there is none."""
        with self._connect(write=False) as con:
            row = find_version(con, regime, status=VersionStatus.CURRENT)
        return ParameterVersion.from_row(row) if row else None

    def version(self, regime: str, version: int) -> ParameterVersion:
        """One version of ``regime``; ``KeyError`` when it does not exist."""
        with self._connect(write=False) as con:
            row = find_version(con, regime, version=version)
        if row is None:
            raise KeyError(f"regime {regime} has no version {version}")
        return ParameterVersion.from_row(row)

    def in_flight(self, regime: str) -> list[ParameterVersion]:
        """The versions of ``regime`` in flight (stage WARM or LIMITED), oldest first."""
        query = (
            sa.select(VERSIONS)
            .where(VERSIONS.c.regime == regime, VERSIONS.c.status == VersionStatus.CANDIDATE)
            .order_by(VERSIONS.c.version)
        )
        return [ParameterVersion.from_row(r) for r in self._rows(query)]

    def history(self, regime: str | None = None) -> list[ParameterVersion]:
        """Every version (of one regime when given), by regime then version."""
        query = sa.select(VERSIONS).order_by(VERSIONS.c.regime, VERSIONS.c.version)
        if regime is not None:
            query = query.where(VERSIONS.c.regime == regime)
        return [ParameterVersion.from_row(r) for r in self._rows(query)]

    def transitions(self, regime: str | None = None) -> list[Transition]:
        """The audit trail (of one regime when given), oldest first."""
        query = sa.select(TRANSITIONS).order_by(TRANSITIONS.c.id)
        if regime is not None:
            query = query.where(TRANSITIONS.c.regime == regime)
        return [Transition.from_row(r) for r in self._rows(query)]

    def regime_decisions(self, regime: str | None = None) -> list[RegimeDecision]:
        """Decisions that stored no version (``blocked``, ``wait``, ``skip``), oldest first."""
        query = sa.select(REGIME_DECISIONS).order_by(REGIME_DECISIONS.c.id)
        if regime is not None:
            query = query.where(REGIME_DECISIONS.c.regime == regime)
        return [RegimeDecision.from_row(r) for r in self._rows(query)]

    def cold_bars_used(self, regime: str) -> dict[str, datetime]:
        """Per instrument, the newest bar an earlier COLD test of ``regime`` judged."""
        with self._connect(write=False) as con:
            rows = con.execute(cold_bars_query(regime)).all()
        # SQLite hands back naive datetimes; every time stored here is UTC.
        return {str(k): v if v.tzinfo else v.replace(tzinfo=UTC) for k, v in rows}

    def cold_tested(self, regime: str) -> list[dict[str, Any]]:
        """Every parameter set a COLD test of ``regime`` judged (each is judged once)."""
        with self._connect(write=False) as con:
            rows = con.execute(cold_tested_query(regime)).all()
        out: list[dict[str, Any]] = []
        for (text,) in rows:  # one row per instrument: the same sets repeat
            for params in json.loads(text or "[]"):
                if params not in out:
                    out.append(params)
        return out
