"""Registry records that are not versions: decisions about a regime that created no version
(a level that did not pass, COLD waiting for unused bars) and the bars each COLD test used."""

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ffe_dagster.core.promotion.config import Stage
from ffe_dagster.core.promotion.records import RegimeAction
from ffe_dagster.resources.registry_schema import COLD_BARS, REGIME_DECISIONS, TRIGGERS


def insert_regime_decision(
    con: sa.Connection,
    *,
    regime: str,
    level: int,
    stage: Stage,
    action: RegimeAction,
    reason: str,
    trigger: str,
    run_id: str | None,
    at: datetime,
) -> None:
    """Append one decision about ``regime`` that stores no version."""
    if trigger not in TRIGGERS:
        raise ValueError(f"trigger must be one of {TRIGGERS}, got {trigger!r}")
    con.execute(
        sa.insert(REGIME_DECISIONS).values(
            regime=regime,
            level=level,
            stage=stage,
            action=action,
            reason=reason,
            trigger=trigger,
            run_id=run_id,
            at=at,
        )
    )


def insert_cold_bars(
    con: sa.Connection,
    *,
    regime: str,
    used: Mapping[str, tuple[datetime, datetime]],
    tested: Sequence[Mapping[str, Any]],
    version: int | None,
    run_id: str | None,
    at: datetime,
) -> None:
    """Record, per instrument, the first and last bar a COLD test of ``regime`` judged, and
    the parameter sets judged on them."""
    sets = json.dumps([dict(p) for p in tested], sort_keys=True, default=str)
    for instrument, (first, last) in sorted(used.items()):
        con.execute(
            sa.insert(COLD_BARS).values(
                regime=regime,
                instrument=instrument,
                first_bar=first,
                last_bar=last,
                version=version,
                tested=sets,
                run_id=run_id,
                at=at,
            )
        )


def cold_tested_query(regime: str) -> sa.Select[str | None]:
    """The ``tested`` lists of every COLD test of ``regime``."""
    return sa.select(COLD_BARS.c.tested).where(COLD_BARS.c.regime == regime)


def cold_bars_query(regime: str) -> sa.Select[str, datetime]:
    """Per instrument, the newest bar any COLD test of ``regime`` used."""
    return (
        sa.select(COLD_BARS.c.instrument, sa.func.max(COLD_BARS.c.last_bar))
        .where(COLD_BARS.c.regime == regime)
        .group_by(COLD_BARS.c.instrument)
    )
