"""Data-quality gate for OHLCV bars, built on a Great Expectations suite.

Every rule is one row-level GX expectation, so GX's ``unexpected_index_list`` says exactly which
bars broke it. Rows that break any rule go to a quarantine frame (once per broken rule, with a
human reason); the rest are the valid bars. Derived columns (minimum price, duplicate flag,
absolute log return) are computed in polars first, because GX runs on pandas row by row.
"""

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from ffe_dagster.core.bars import OHLCV_SCHEMA, PRICE_COLUMNS, TS_DTYPE

if TYPE_CHECKING:
    from great_expectations.core.batch_definition import BatchDefinition
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.expectations.expectation import Expectation

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {**OHLCV_SCHEMA, "rule": pl.Utf8(), "reason": pl.Utf8()}
_ROW = "_row"
_FLOAT_COLUMNS = (*PRICE_COLUMNS, "volume")


@dataclass(frozen=True, slots=True)
class ValidationConfig:
    """Thresholds of the bar-quality suite.

    ``max_abs_log_return`` flags a bar whose close moved more than this (in absolute log terms)
    from the previous accepted bar; ``require_volume`` is False for feeds without volume (forex);
    ``max_quarantine_fraction`` is the share of quarantined rows a blocking check tolerates.
    """

    max_abs_log_return: float = 0.5
    require_volume: bool = True
    max_quarantine_fraction: float = 0.01


@dataclass(frozen=True, slots=True)
class RuleFailure:
    """Outcome of one expectation of the suite: ``success`` False when any row broke it."""

    rule: str
    expectation: str
    success: bool
    unexpected_count: int


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """Valid bars, quarantined rows and the per-rule outcome of one ``validate_bars`` call."""

    valid: pl.DataFrame
    quarantine: pl.DataFrame
    rules: tuple[RuleFailure, ...]
    rows_checked: int
    suite_success_on_valid: bool

    @property
    def quarantined_rows(self) -> int:
        """Input rows kept out of ``valid`` (a row broken by several rules counts once)."""
        return self.rows_checked - self.valid.height

    @property
    def quarantine_fraction(self) -> float:
        """``quarantined_rows / rows_checked``; 0.0 for empty input."""
        return self.quarantined_rows / self.rows_checked if self.rows_checked else 0.0


@dataclass(frozen=True, slots=True, eq=False)
class _Rule:
    rule: str
    expectation: "Expectation"
    reason: pl.Expr  # evaluated on the offending rows of the prepared frame


def _finite(column: str) -> pl.Expr:
    # pandas cannot tell NaN from null, and inf would pass "> 0": all become null for GX.
    return pl.when(pl.col(column).is_finite()).then(pl.col(column)).alias(column)


@functools.cache
def _rules(config: ValidationConfig) -> tuple[_Rule, ...]:
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
        expect_column_values_to_not_be_null as not_none,
    )

    def not_null(column: str) -> _Rule:
        return _Rule(
            f"{column}_not_null",
            not_none.ExpectColumnValuesToNotBeNull(column=column),
            pl.format(f"{column} is {{}}", pl.col(column).cast(pl.Utf8).fill_null("null")),
        )

    def pair(rule: str, column_a: str, column_b: str, reason: str) -> _Rule:
        return _Rule(
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
        _Rule(
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
        _Rule(
            "volume_non_negative",
            between.ExpectColumnValuesToBeBetween(column="volume", min_value=0),
            pl.format("volume {} < 0", pl.col("volume")),
        ),
        _Rule(
            "ts_unique",
            in_set.ExpectColumnValuesToBeInSet(column="ts_is_duplicate", value_set=[False]),
            pl.format("ts {} duplicates an earlier bar", pl.col("ts").dt.to_string("%F %T UTC")),
        ),
        _Rule(
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
def _suite(config: ValidationConfig) -> "ExpectationSuite":
    import great_expectations as gx

    return gx.ExpectationSuite(
        name="ohlcv_bars", expectations=[r.expectation for r in _rules(config)]
    )


@functools.cache
def _batch_definition() -> "BatchDefinition":
    # GX is imported lazily: importing it costs seconds, paid only when validation runs.
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("bars").add_dataframe_asset("bars")
    return asset.add_batch_definition_whole_dataframe("whole_frame")


def _abs_log_returns(
    close: list[float | None], usable: list[bool], limit: float
) -> tuple[list[float | None], list[float | None]]:
    # The reference is the last accepted bar, so a single spike quarantines only the spike and
    # not the bar that returns to normal after it; re-running on the valid rows gives the same
    # returns because every valid row's reference is the valid row before it.
    abs_return: list[float | None] = [None] * len(close)
    prev_close: list[float | None] = [None] * len(close)
    reference: float | None = None
    for i, (value, ok) in enumerate(zip(close, usable, strict=True)):
        if not ok or value is None:
            continue
        if reference is not None:
            move = abs(math.log(value / reference))
            abs_return[i], prev_close[i] = move, reference
            if move > limit:
                continue
        reference = value
    return abs_return, prev_close


def _prepare(bars: pl.DataFrame, config: ValidationConfig) -> pl.DataFrame:
    missing = [c for c in OHLCV_SCHEMA if c not in bars.columns]
    if missing:
        raise ValueError(f"bars are missing columns {missing}; got {bars.columns}")
    frame = (
        bars.select(
            pl.col("ts").cast(TS_DTYPE), *[pl.col(c).cast(pl.Float64) for c in _FLOAT_COLUMNS]
        )
        .sort("ts", maintain_order=True, nulls_last=True)
        .with_row_index(_ROW)
        .with_columns(
            min_price=pl.min_horizontal(_finite(c) for c in PRICE_COLUMNS),
            ts_is_duplicate=pl.col("ts").is_not_null() & ~pl.col("ts").is_first_distinct(),
        )
    )
    volume = _finite("volume")
    volume_ok = (volume >= 0) if config.require_volume else (volume.is_null() | (volume >= 0))
    # Mirrors the suite's other row rules: returns are measured only between bars it accepts.
    usable = (
        pl.col("ts").is_not_null()
        & ~pl.col("ts_is_duplicate")
        & pl.all_horizontal(_finite(c).is_not_null() for c in PRICE_COLUMNS)
        & (pl.col("min_price") > 0)
        & (pl.col("high") >= pl.max_horizontal("open", "close"))
        & (pl.col("low") <= pl.min_horizontal("open", "close"))
        & volume_ok
    ).fill_null(False)
    abs_return, prev_close = _abs_log_returns(
        frame["close"].to_list(),
        frame.select(usable.alias("usable"))["usable"].to_list(),
        config.max_abs_log_return,
    )
    return frame.with_columns(
        abs_log_return=pl.Series(abs_return, dtype=pl.Float64),
        prev_close=pl.Series(prev_close, dtype=pl.Float64),
    )


def _run_suite(
    frame: pl.DataFrame, config: ValidationConfig
) -> list[tuple[_Rule, RuleFailure, list[int]]]:
    """Validate the prepared frame; per rule: the rule, its outcome and the offending rows."""
    gx_frame = frame.select(
        "ts",
        *[_finite(c) for c in _FLOAT_COLUMNS],
        "min_price",
        "ts_is_duplicate",
        "abs_log_return",
    ).to_pandas()
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": gx_frame})
    suite_result = batch.validate(_suite(config), result_format="COMPLETE")
    by_rule = {r.rule: r for r in _rules(config)}
    order = {rule_id: i for i, rule_id in enumerate(by_rule)}
    outcomes: list[tuple[_Rule, RuleFailure, list[int]]] = []
    for result in suite_result.results:
        expectation = result.expectation_config
        details = result.result
        if expectation is None or "unexpected_index_list" not in details:
            raise RuntimeError(f"GX expectation did not run: {result.exception_info}")
        rows = [int(i) for i in details["unexpected_index_list"]]
        rule = by_rule[expectation.meta["rule"]]
        failure = RuleFailure(rule.rule, expectation.type, bool(result.success), len(rows))
        outcomes.append((rule, failure, rows))
    # GX groups results by expectation type; report them in the suite's declared order.
    return sorted(outcomes, key=lambda outcome: order[outcome[0].rule])


def validate_bars(bars: pl.DataFrame, config: ValidationConfig) -> ValidationResult:
    """Run the bar-quality suite on ``bars`` and split them into valid and quarantined rows.

    The input is sorted by ``ts`` first and is not modified. Every input row ends up either in
    ``valid`` or, once per broken rule, in ``quarantine``. For the first of several bars sharing
    a ``ts`` only the later ones break ``ts_unique``. ``suite_success_on_valid`` re-runs the suite
    on the valid rows. Raises ``ValueError`` when a column of the OHLCV schema is missing.
    """
    frame = _prepare(bars, config)
    outcomes = _run_suite(frame, config)
    quarantined = [
        frame.filter(pl.col(_ROW).is_in(rows)).select(
            _ROW, *OHLCV_SCHEMA, rule=pl.lit(rule.rule), reason=rule.reason
        )
        for rule, _, rows in outcomes
        if rows
    ]
    quarantine = (
        pl.concat(quarantined)
        .sort(_ROW, maintain_order=True)
        .drop(_ROW)
        .cast(pl.Schema(QUARANTINE_SCHEMA))
        if quarantined
        else pl.DataFrame(schema=QUARANTINE_SCHEMA)
    )
    bad_rows = sorted({row for _, _, rows in outcomes for row in rows})
    valid = (
        frame.filter(~pl.col(_ROW).is_in(bad_rows))
        .select(*OHLCV_SCHEMA)
        .with_columns(pl.col("volume").fill_nan(None))
    )
    recheck = _run_suite(_prepare(valid, config), config)
    return ValidationResult(
        valid=valid,
        quarantine=quarantine,
        rules=tuple(failure for _, failure, _ in outcomes),
        rows_checked=bars.height,
        suite_success_on_valid=all(failure.success for _, failure, _ in recheck),
    )
