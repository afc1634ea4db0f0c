"""Data-quality gate for OHLCV bars, built on a Great Expectations suite (docs/spec.md §2).

Row rules are GX expectations on the bars, so GX's ``unexpected_index_list`` says exactly which
bars broke them: those rows go to a quarantine frame (once per broken rule, with a human reason)
and the rest are the valid bars. Rules about the series as a whole (column types, bar spacing,
staleness) are GX expectations on a small frame of findings, one row per column, gap or newest
bar; they fail the suite without quarantining anything. Derived columns (minimum price, duplicate
flag, absolute log return, gaps measured against the market schedule) are computed in polars
first, because GX runs on pandas row by row.
"""

import functools
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import polars as pl

from ffe_dagster.core.data.bars import (
    GAP_SCHEMA,
    OHLCV_SCHEMA,
    PRICE_COLUMNS,
    TS_DTYPE,
    MarketKind,
    MarketSchedule,
    find_gaps,
    interval_to_timedelta,
)
from ffe_dagster.core.data.validation_rules import (
    FRESHNESS_RULE,
    SCHEMA_RULE,
    SPACING_RULE,
    Rule,
    ValidationConfig,
    finite,
    row_rules,
    series_level_rules,
)

if TYPE_CHECKING:
    from great_expectations.core.batch_definition import BatchDefinition
    from great_expectations.core.expectation_suite import ExpectationSuite

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {**OHLCV_SCHEMA, "rule": pl.Utf8(), "reason": pl.Utf8()}
_ROW = "_row"
_FLOAT_COLUMNS = (*PRICE_COLUMNS, "volume")
_FINDINGS_SCHEMA: dict[str, pl.DataType] = {
    "subject": pl.Utf8(),
    "dtype": pl.Utf8(),
    "expected_dtype": pl.Utf8(),
    "gap_open_minutes": pl.Float64(),
    "gap_limit_minutes": pl.Float64(),
    "age_minutes": pl.Float64(),
    "age_limit_minutes": pl.Float64(),
}


@dataclass(frozen=True, slots=True)
class RuleFailure:
    """Outcome of one expectation of the suite: ``success`` False when any row broke it."""

    rule: str
    expectation: str
    success: bool
    unexpected_count: int


@dataclass(frozen=True, slots=True)
class Staleness:
    """How old the newest valid bar was at ``now``, in the measure the market's rule uses."""

    newest_bar: datetime | None
    now: datetime
    age: timedelta
    limit: timedelta
    measure: str  # "wall time" or "open-market time"

    @property
    def fresh(self) -> bool:
        """True when the newest bar is within the limit."""
        return self.age <= self.limit


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """Valid bars, quarantined rows and the per-rule outcome of one ``validate_bars`` call.

    ``gaps`` lists every run of missing bars (``GAP_SCHEMA``) among the valid bars;
    ``findings`` holds one human sentence per failed series-level rule.
    """

    valid: pl.DataFrame
    quarantine: pl.DataFrame
    rules: tuple[RuleFailure, ...]
    rows_checked: int
    suite_success_on_valid: bool
    gaps: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=GAP_SCHEMA))
    staleness: Staleness | None = None
    findings: tuple[tuple[str, str], ...] = ()

    @property
    def quarantined_rows(self) -> int:
        """Input rows kept out of ``valid`` (a row broken by several rules counts once)."""
        return self.rows_checked - self.valid.height

    @property
    def quarantine_fraction(self) -> float:
        """``quarantined_rows / rows_checked``; 0.0 for empty input."""
        return self.quarantined_rows / self.rows_checked if self.rows_checked else 0.0

    def rule_passed(self, rule: str) -> bool:
        """True when ``rule`` ran and passed, or did not apply (not in ``rules``)."""
        return all(r.success for r in self.rules if r.rule == rule)

    @property
    def spacing_ok(self) -> bool:
        """No run of missing bars exceeded the allowed open-market gap."""
        return self.rule_passed(SPACING_RULE)

    @property
    def fresh_ok(self) -> bool:
        """The newest bar was recent enough (or staleness was not asked for)."""
        return self.rule_passed(FRESHNESS_RULE)


@functools.cache
def _suite(rules: tuple[Rule, ...]) -> "ExpectationSuite":
    import great_expectations as gx

    return gx.ExpectationSuite(name="ohlcv_bars", expectations=[r.expectation for r in rules])


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
    close: list[float | None], usable: list[bool], limit: float, reference: float | None
) -> tuple[list[float | None], list[float | None]]:
    # The reference is the last accepted bar, so a single spike quarantines only the spike and
    # not the bar that returns to normal after it; re-running on the valid rows gives the same
    # returns because every valid row's reference is the valid row before it.
    abs_return: list[float | None] = [None] * len(close)
    prev_close: list[float | None] = [None] * len(close)
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


def _check_columns(bars: pl.DataFrame) -> None:
    missing = [c for c in OHLCV_SCHEMA if c not in bars.columns]
    if missing:
        raise ValueError(f"bars are missing columns {missing}; got {bars.columns}")


def _prepare(
    bars: pl.DataFrame, config: ValidationConfig, previous_close: float | None
) -> pl.DataFrame:
    _check_columns(bars)
    step_us = (
        interval_to_timedelta(config.interval) // timedelta(microseconds=1)
        if config.interval is not None
        else None
    )
    off_grid = (
        (pl.col("ts").dt.epoch("us") % step_us != 0).fill_null(False)
        if step_us is not None
        else pl.lit(False)
    )
    frame = (
        bars.select(
            pl.col("ts").cast(TS_DTYPE), *[pl.col(c).cast(pl.Float64) for c in _FLOAT_COLUMNS]
        )
        .sort("ts", maintain_order=True, nulls_last=True)
        .with_row_index(_ROW)
        .with_columns(
            min_price=pl.min_horizontal(finite(c) for c in PRICE_COLUMNS),
            ts_is_duplicate=pl.col("ts").is_not_null() & ~pl.col("ts").is_first_distinct(),
            ts_off_grid=off_grid,
        )
    )
    volume = finite("volume")
    volume_ok = (volume >= 0) if config.require_volume else (volume.is_null() | (volume >= 0))
    # Mirrors the suite's other row rules: returns are measured only between bars it accepts.
    usable = (
        pl.col("ts").is_not_null()
        & ~pl.col("ts_is_duplicate")
        & ~pl.col("ts_off_grid")
        & pl.all_horizontal(finite(c).is_not_null() for c in PRICE_COLUMNS)
        & (pl.col("min_price") > 0)
        & (pl.col("high") >= pl.max_horizontal("open", "close"))
        & (pl.col("low") <= pl.min_horizontal("open", "close"))
        & volume_ok
    ).fill_null(False)
    abs_return, prev_close = _abs_log_returns(
        frame["close"].to_list(),
        frame.select(usable.alias("usable"))["usable"].to_list(),
        config.max_abs_log_return,
        previous_close,
    )
    return frame.with_columns(
        abs_log_return=pl.Series(abs_return, dtype=pl.Float64),
        prev_close=pl.Series(prev_close, dtype=pl.Float64),
    )


def _run(
    gx_frame: pl.DataFrame, rules: tuple[Rule, ...]
) -> list[tuple[Rule, RuleFailure, list[int]]]:
    """Validate ``gx_frame`` with ``rules``; per rule: the rule, its outcome and the positions
    of the offending rows."""
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": gx_frame.to_pandas()})
    suite_result = batch.validate(_suite(rules), result_format="COMPLETE")
    by_rule = {r.rule: r for r in rules}
    order = {rule_id: i for i, rule_id in enumerate(by_rule)}
    outcomes: list[tuple[Rule, RuleFailure, list[int]]] = []
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


def _run_row_suite(
    frame: pl.DataFrame, config: ValidationConfig
) -> list[tuple[Rule, RuleFailure, list[int]]]:
    gx_frame = frame.select(
        "ts",
        *[finite(c) for c in _FLOAT_COLUMNS],
        "min_price",
        "ts_is_duplicate",
        "ts_off_grid",
        "abs_log_return",
    )
    return _run(gx_frame, row_rules(config))


def staleness_of(
    newest_bar: datetime | None,
    now: datetime,
    config: ValidationConfig,
    *,
    since: datetime | None = None,
) -> Staleness:
    """How stale the series is at ``now`` under the market's rule (see ``ValidationConfig``).

    Without any bar the age runs from ``since`` (the start of the window asked for), so an
    instrument that never delivered anything is stale, not silently fresh.
    """
    if config.interval is None:
        raise ValueError("staleness needs ValidationConfig.interval")
    schedule = MarketSchedule.for_market(config.market)
    reference = newest_bar if newest_bar is not None else since
    if config.market is MarketKind.CRYPTO:
        limit = 2 * interval_to_timedelta(config.interval) + config.stale_grace
        age = now - reference if reference is not None else timedelta.max
        return Staleness(newest_bar, now, age, limit, "wall time")
    if schedule.is_open(now):
        age = schedule.open_time(reference, now) if reference is not None else timedelta.max
        return Staleness(newest_bar, now, age, config.forex_stale_open, "open-market time")
    age = now - reference if reference is not None else timedelta.max
    return Staleness(newest_bar, now, age, config.forex_stale_closed, "wall time")


def _minutes(delta: timedelta) -> float:
    return delta / timedelta(minutes=1) if delta != timedelta.max else math.inf


def _findings_frame(
    bars: pl.DataFrame, gaps: pl.DataFrame, staleness: Staleness | None, config: ValidationConfig
) -> pl.DataFrame:
    rows: list[dict[str, object]] = [
        {
            "subject": f"column {name}",
            "dtype": str(bars.schema[name]),
            "expected_dtype": str(expected),
        }
        for name, expected in OHLCV_SCHEMA.items()
    ]
    limit = _minutes(config.max_open_gap)
    for gap in gaps.iter_rows(named=True):
        if not gap["open_missing_bars"]:
            continue  # wholly inside a market closure: expected, nothing to check
        interval = interval_to_timedelta(config.interval or "1m")
        rows.append(
            {
                "subject": f"gap {gap['gap_start']:%F %H:%M} .. {gap['gap_end']:%F %H:%M} UTC "
                f"({gap['missing_bars']} bars)",
                "gap_open_minutes": _minutes(gap["open_missing_bars"] * interval),
                "gap_limit_minutes": limit,
            }
        )
    if staleness is not None:
        newest = (
            f"newest bar {staleness.newest_bar:%F %H:%M} UTC"
            if staleness.newest_bar
            else "no bar at all"
        )
        rows.append(
            {
                "subject": f"{newest} at {staleness.now:%F %H:%M} UTC ({staleness.measure})",
                "age_minutes": _minutes(staleness.age),
                "age_limit_minutes": _minutes(staleness.limit),
            }
        )
    return pl.DataFrame(rows, schema=_FINDINGS_SCHEMA)


def validate_bars(
    bars: pl.DataFrame,
    config: ValidationConfig,
    *,
    previous_bar: tuple[datetime, float] | None = None,
    window: tuple[datetime, datetime] | None = None,
    now: datetime | None = None,
) -> ValidationResult:
    """Run the bar-quality suite on ``bars`` and split them into valid and quarantined rows.

    The input is sorted by ``ts`` first and is not modified. Every input row ends up either in
    ``valid`` or, once per broken rule, in ``quarantine``. For the first of several bars sharing
    a ``ts`` only the later ones break ``ts_unique``. ``suite_success_on_valid`` re-runs the row
    rules and the column types on the valid rows.

    Context for a window of a longer series: ``previous_bar`` (ts, close) is the last valid bar
    before it (the reference of the first return and of the first gap); ``window`` (start, end)
    lets gaps at its edges count (with ``config.interval`` set); ``now`` asks for the staleness
    rule, measured on the newest valid bar. Raises ``ValueError`` when a column is missing.
    """
    _check_columns(bars)
    previous_close = previous_bar[1] if previous_bar else None
    frame = _prepare(bars, config, previous_close)
    outcomes = _run_row_suite(frame, config)
    quarantined = [
        frame.filter(pl.col(_ROW).is_in(rows)).select(
            _ROW, *OHLCV_SCHEMA, rule=pl.lit(rule.rule), reason=rule.reason
        )
        for rule, _, rows in outcomes
        if rows and rule.quarantines
    ]
    quarantine = (
        pl.concat(quarantined)
        .sort(_ROW, maintain_order=True)
        .drop(_ROW)
        .cast(pl.Schema(QUARANTINE_SCHEMA))
        if quarantined
        else pl.DataFrame(schema=QUARANTINE_SCHEMA)
    )
    bad_rows = sorted({row for rule, _, rows in outcomes if rule.quarantines for row in rows})
    valid = (
        frame.filter(~pl.col(_ROW).is_in(bad_rows))
        .select(*OHLCV_SCHEMA)
        .with_columns(pl.col("volume").fill_nan(None))
    )
    recheck = _run_row_suite(_prepare(valid, config, previous_close), config)

    gaps = pl.DataFrame(schema=GAP_SCHEMA)
    if config.interval is not None:
        gaps = find_gaps(
            valid["ts"],
            interval_to_timedelta(config.interval),
            MarketSchedule.for_market(config.market),
            window=window,
            previous_ts=previous_bar[0] if previous_bar else None,
        )
    staleness = None
    if now is not None:
        newest = valid["ts"].max() if valid.height else (previous_bar[0] if previous_bar else None)
        assert newest is None or isinstance(newest, datetime)
        staleness = staleness_of(newest, now, config, since=window[0] if window else None)
    findings = _findings_frame(bars, gaps, staleness, config)
    series_rules = series_level_rules(config.interval is not None, staleness is not None)
    series = _run(findings.drop("subject"), series_rules)
    reasons = tuple(
        (rule.rule, reason)
        for rule, _, rows in series
        for reason in findings.with_row_index(_ROW)
        .filter(pl.col(_ROW).is_in(rows))
        .select(rule.reason)
        .to_series()
        .to_list()
    )
    return ValidationResult(
        valid=valid,
        quarantine=quarantine,
        rules=tuple(failure for _, failure, _ in (*outcomes, *series)),
        rows_checked=bars.height,
        suite_success_on_valid=all(f.success for _, f, _ in recheck)
        and all(f.success for rule, f, _ in series if rule.rule == SCHEMA_RULE),
        gaps=gaps,
        staleness=staleness,
        findings=reasons,
    )
