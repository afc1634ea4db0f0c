"""The rules of the bar-quality suite: its thresholds and the Great Expectations expectations.

``row_rules`` are checked on the prepared bars (each offending row is quarantined, except for the
timestamp-order rule); ``series_level_rules`` are checked on the findings frame (column types, gaps
measured against the market schedule, staleness) and only fail the suite. Running them is
``ffe_dagster.core.data.validation``'s job.
"""

import functools
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import polars as pl

from ffe_dagster.core.data.bars import PRICE_COLUMNS, MarketKind

if TYPE_CHECKING:
    from great_expectations.expectations.expectation import Expectation

SCHEMA_RULE = "schema_types"
INCREASING_RULE = "ts_strictly_increasing"
SPACING_RULE = "bar_spacing_regular"
FRESHNESS_RULE = "bars_fresh"
GRID_RULE = "ts_on_grid"


@dataclass(frozen=True, slots=True)
class ValidationConfig:
    """Thresholds of the bar-quality suite.

    ``max_abs_log_return`` flags a bar whose close moved more than this (in absolute log terms)
    from the previous accepted bar; ``require_volume`` is False for feeds without volume (forex);
    ``max_quarantine_fraction`` is the share of quarantined rows a blocking check tolerates.
    With ``interval`` set, every ``ts`` must lie on the interval's epoch-aligned grid (a 5m bar
    at 12:03 is quarantined), and bar spacing is checked against ``market``'s schedule: a run of
    missing bars longer than ``max_open_gap`` of open-market time fails (shorter ones are real
    exchange outages and are only reported). Staleness (when ``validate_bars`` gets ``now``):
    crypto's newest bar may be at most 2 intervals plus ``stale_grace`` old; forex's at most
    ``forex_stale_open`` of open-market time while the market is open, and
    ``forex_stale_closed`` of wall time while it is closed (a weekend).
    """

    max_abs_log_return: float = 0.5
    require_volume: bool = True
    max_quarantine_fraction: float = 0.01
    interval: str | None = None
    market: MarketKind = MarketKind.CRYPTO
    max_open_gap: timedelta = timedelta(hours=6)
    stale_grace: timedelta = timedelta(minutes=5)
    forex_stale_open: timedelta = timedelta(hours=2)
    forex_stale_closed: timedelta = timedelta(hours=72)


@dataclass(frozen=True, slots=True, eq=False)
class Rule:
    rule: str
    expectation: "Expectation"
    reason: pl.Expr  # evaluated on the offending rows of the prepared frame
    quarantines: bool = True


def finite(column: str) -> pl.Expr:
    # pandas cannot tell NaN from null, and inf would pass "> 0": all become null for GX.
    return pl.when(pl.col(column).is_finite()).then(pl.col(column)).alias(column)


@functools.cache
def row_rules(config: ValidationConfig) -> tuple[Rule, ...]:
    # The classes are imported from their defining modules: GX's package does not re-export them.
    from great_expectations.expectations.core import (
        expect_column_pair_values_a_to_be_greater_than_b as pair_a_ge_b,
    )
    from great_expectations.expectations.core import (
        expect_column_values_to_be_between as between,
    )
    from great_expectations.expectations.core import (
        expect_column_values_to_be_in_set as in_set,
    )
    from great_expectations.expectations.core import (
        expect_column_values_to_be_increasing as increasing,
    )
    from great_expectations.expectations.core import (
        expect_column_values_to_not_be_null as not_none,
    )

    def not_null(column: str) -> Rule:
        return Rule(
            f"{column}_not_null",
            not_none.ExpectColumnValuesToNotBeNull(column=column),
            pl.format(f"{column} is {{}}", pl.col(column).cast(pl.Utf8).fill_null("null")),
        )

    def pair(rule: str, column_a: str, column_b: str, reason: str) -> Rule:
        return Rule(
            rule,
            pair_a_ge_b.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A=column_a,
                column_B=column_b,
                or_equal=True,
                ignore_row_if="either_value_is_missing",  # missing values have their own rule
            ),
            pl.format(reason, pl.col(column_a), pl.col(column_b)),
        )

    non_positive = [
        pl.when(pl.col(c) <= 0).then(pl.format(f"{c} {{}}", pl.col(c))) for c in PRICE_COLUMNS
    ]
    limit = config.max_abs_log_return
    rules = [
        *(not_null(c) for c in ("ts", *PRICE_COLUMNS)),
        *([not_null("volume")] if config.require_volume else []),
        Rule(
            "prices_positive",
            between.ExpectColumnValuesToBeBetween(column="min_price", min_value=0, strict_min=True),
            pl.concat_str(
                pl.lit("prices must be > 0: "),
                pl.concat_str(non_positive, separator=", ", ignore_nulls=True),
            ),
        ),
        pair("high_ge_open", "high", "open", "high {} < open {}"),
        pair("high_ge_close", "high", "close", "high {} < close {}"),
        pair("low_le_open", "open", "low", "open {} < low {}"),
        pair("low_le_close", "close", "low", "close {} < low {}"),
        Rule(
            "volume_non_negative",
            between.ExpectColumnValuesToBeBetween(column="volume", min_value=0),
            pl.format("volume {} < 0", pl.col("volume")),
        ),
        Rule(
            "ts_unique",
            in_set.ExpectColumnValuesToBeInSet(column="ts_is_duplicate", value_set=[False]),
            pl.format("ts {} duplicates an earlier bar", pl.col("ts").dt.to_string("%F %T UTC")),
        ),
        Rule(
            INCREASING_RULE,
            # Checked on the frame sorted by ts: it fails exactly when timestamps repeat, and on
            # the valid rows it proves what every consumer assumes.
            increasing.ExpectColumnValuesToBeIncreasing(column="ts", strictly=True),
            pl.format("ts {} does not follow the bar before it", pl.col("ts")),
            quarantines=False,
        ),
        *(
            [
                Rule(
                    GRID_RULE,
                    in_set.ExpectColumnValuesToBeInSet(column="ts_off_grid", value_set=[False]),
                    pl.format(
                        "ts {} is off the {} grid (bars open at multiples of {} since the epoch)",
                        pl.col("ts").dt.to_string("%F %T UTC"),
                        pl.lit(config.interval),
                        pl.lit(config.interval),
                    ),
                )
            ]
            if config.interval is not None
            else []
        ),
        Rule(
            "return_outlier",
            between.ExpectColumnValuesToBeBetween(column="abs_log_return", max_value=limit),
            pl.format(
                "|log(close {} / previous close {})| = {} > {}",
                pl.col("close"),
                pl.col("prev_close"),
                pl.col("abs_log_return").round(4),
                pl.lit(limit),
            ),
        ),
    ]
    for rule in rules:
        rule.expectation.meta = {"rule": rule.rule}
    return tuple(rules)


@functools.cache
def series_level_rules(spacing: bool, freshness: bool) -> tuple[Rule, ...]:
    from great_expectations.expectations.core import (
        expect_column_pair_values_a_to_be_greater_than_b as pair_a_ge_b,
    )
    from great_expectations.expectations.core import (
        expect_column_pair_values_to_be_equal as pair_equal,
    )

    def within(column: str, limit_column: str) -> "Expectation":
        return pair_a_ge_b.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A=limit_column,
            column_B=column,
            or_equal=True,
            ignore_row_if="either_value_is_missing",  # rows about other rules leave it empty
        )

    rules = [
        Rule(
            SCHEMA_RULE,
            pair_equal.ExpectColumnPairValuesToBeEqual(
                column_A="dtype", column_B="expected_dtype", ignore_row_if="either_value_is_missing"
            ),
            pl.format("{} has type {}, expected {}", "subject", "dtype", "expected_dtype"),
            quarantines=False,
        )
    ]
    if spacing:
        rules.append(
            Rule(
                SPACING_RULE,
                within("gap_open_minutes", "gap_limit_minutes"),
                pl.format(
                    "{}: {} min missing while the market was open > {} min allowed",
                    "subject",
                    pl.col("gap_open_minutes").round(0),
                    pl.col("gap_limit_minutes").round(0),
                ),
                quarantines=False,
            )
        )
    if freshness:
        rules.append(
            Rule(
                FRESHNESS_RULE,
                within("age_minutes", "age_limit_minutes"),
                pl.format(
                    "{} is {} min old > {} min allowed",
                    "subject",
                    pl.col("age_minutes").round(1),
                    pl.col("age_limit_minutes").round(1),
                ),
                quarantines=False,
            )
        )
    for rule in rules:
        rule.expectation.meta = {"rule": rule.rule}
    return tuple(rules)
