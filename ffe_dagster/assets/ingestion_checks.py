"""The asset checks of ``validated_bars``: what a run found, and the results it reports.

``ValidationTally`` adds up the validation of every window of a run (rows checked and
quarantined, rule failures, gaps, staleness, the partitions failing each check);
``validation_results`` turns it into the materialization metadata and one ``AssetCheckResult``
per check.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import polars as pl
from dagster import AssetCheckResult, AssetCheckSeverity, MaterializeResult, MetadataValue

from ffe_dagster.assets.acquisition import utc_days
from ffe_dagster.core.data.validation import ValidationResult
from ffe_dagster.core.data.validation_rules import GRID_RULE
from ffe_dagster.partitions import partition_key_of

GX_CHECK = "gx_suite_passes"
QUARANTINE_CHECK = "quarantine_rate_within_limit"
SPACING_CHECK = "bar_spacing_regular"
FRESHNESS_CHECK = "bars_fresh"
_LISTED = 20  # how many offending items a check's metadata lists


@dataclass(slots=True)
class ValidationTally:
    """What ``validated_bars`` found over every window of a run; failing partitions are named
    by the keys of ``grain`` windows."""

    grain: str = "month"
    rows_checked: int = 0
    rows_quarantined: int = 0
    suite_ok: bool = True
    worst_fraction: float = 0.0
    by_rule: dict[str, int] = field(default_factory=dict)
    rules_run: set[str] = field(default_factory=set)
    findings: dict[str, list[str]] = field(default_factory=dict)
    failing_partitions: dict[str, set[str]] = field(default_factory=dict)
    staleness: dict[str, dict[str, Any]] = field(default_factory=dict)
    gaps: int = 0
    by_instrument: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, instrument: str, result: ValidationResult) -> None:
        self.rows_checked += result.rows_checked
        self.rows_quarantined += result.quarantined_rows
        self.suite_ok &= result.suite_success_on_valid
        self.worst_fraction = max(self.worst_fraction, result.quarantine_fraction)
        for rule in result.rules:
            self.rules_run.add(rule.rule)
            self.by_rule[rule.rule] = self.by_rule.get(rule.rule, 0) + rule.unexpected_count
        for rule, reason in result.findings:
            self.findings.setdefault(rule, []).append(f"{instrument}: {reason}")
        open_gaps = result.gaps.filter(pl.col("open_missing_bars") > 0)
        self.gaps += open_gaps.height
        mine = self.by_instrument.setdefault(
            instrument, {"rows_checked": 0, "rows_quarantined": 0, "gaps": 0}
        )
        mine["rows_checked"] += result.rows_checked
        mine["rows_quarantined"] += result.quarantined_rows
        mine["gaps"] += open_gaps.height
        for day in result.quarantine["ts"].dt.date().unique().sort().to_list():
            self.fail(QUARANTINE_CHECK, partition_key_of(day, instrument, self.grain))
        if result.staleness is not None:
            s = result.staleness
            self.staleness[instrument] = {
                "newest_bar": s.newest_bar.isoformat() if s.newest_bar else None,
                "age_minutes": round(s.age / timedelta(minutes=1), 1)
                if s.age != timedelta.max
                else None,
                "limit_minutes": round(s.limit / timedelta(minutes=1), 1),
                "measure": s.measure,
                "fresh": s.fresh,
            }
            if not s.fresh:
                self.fail(FRESHNESS_CHECK, partition_key_of(s.now.date(), instrument, self.grain))

    def fail(self, check: str, partition: str) -> None:
        self.failing_partitions.setdefault(check, set()).add(partition)

    def partitions(self, check: str) -> list[str]:
        return sorted(self.failing_partitions.get(check, set()))[:_LISTED]


def failing_gap_partitions(
    result: ValidationResult, instrument: str, interval: timedelta, limit: timedelta, grain: str
) -> list[str]:
    """The partition keys touched by a run of missing bars longer than ``limit``."""
    over = result.gaps.filter(pl.col("open_missing_bars") * interval > limit)
    keys: set[str] = set()
    for gap in over.iter_rows(named=True):
        keys.update(
            partition_key_of(d.date(), instrument, grain)
            for d in utc_days(gap["gap_start"], gap["gap_end"])
        )
    return sorted(keys)


def validation_results(
    tally: ValidationTally, max_fraction: float, compute_s: float
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """The materialization (with ``compute_s``, the asset body's time) and one result per
    check."""
    failures = {k: v for k, v in tally.by_rule.items() if v}
    yield MaterializeResult(
        metadata={
            "checks": len(tally.rules_run),
            "rows_checked": tally.rows_checked,
            "rows_quarantined": tally.rows_quarantined,
            "failures_by_rule": MetadataValue.json(failures),
            "gaps": tally.gaps,
            "by_instrument": MetadataValue.json(tally.by_instrument),
            "compute_s": round(compute_s, 3),
        }
    )
    yield AssetCheckResult(
        check_name=GX_CHECK,
        passed=tally.suite_ok,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "rows_checked": tally.rows_checked,
            "rules": MetadataValue.json(tally.by_rule),
            "findings": MetadataValue.json(tally.findings.get("schema_types", [])[:_LISTED]),
        },
    )
    yield AssetCheckResult(
        check_name=QUARANTINE_CHECK,
        passed=tally.worst_fraction <= max_fraction,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "worst_quarantine_fraction": tally.worst_fraction,
            "limit": max_fraction,
            "rows_quarantined": tally.rows_quarantined,
            "rows_off_grid": tally.by_rule.get(GRID_RULE, 0),
            "partitions_with_quarantined_rows": MetadataValue.json(
                tally.partitions(QUARANTINE_CHECK)
            ),
        },
    )
    spacing = tally.findings.get("bar_spacing_regular", [])
    yield AssetCheckResult(
        check_name=SPACING_CHECK,
        passed=not spacing,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "gaps_found": tally.gaps,
            "gaps_over_limit": MetadataValue.json(spacing[:_LISTED]),
            "failing_partitions": MetadataValue.json(tally.partitions(SPACING_CHECK)),
        },
    )
    stale = tally.findings.get("bars_fresh", [])
    yield AssetCheckResult(
        check_name=FRESHNESS_CHECK,
        passed=not stale,
        severity=AssetCheckSeverity.ERROR,
        description=None
        if tally.staleness
        else "Not applicable: no partition of this run is open (the history has ended).",
        metadata={
            "staleness": MetadataValue.json(tally.staleness),
            "stale": MetadataValue.json(stale[:_LISTED]),
            "failing_partitions": MetadataValue.json(tally.partitions(FRESHNESS_CHECK)),
        },
    )
