"""One test per venue fault, through the real assets, the real ccxt / oandapyV20 clients and a
local server speaking the venue's API. Each shows the outcome (retried and complete,
quarantined with its reason, or a clear error) and that no bar stored earlier was lost.

A module fixture per venue stores one real day per case first; each case then fetches its day
again (``refetch``) while the server injects the fault, so a failure has stored bars to lose and
every day has a complete day before it. The open-candle case takes the day after them all.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Literal

import polars as pl
import pytest
from dagster import DagsterInstance

from ffe_dagster.resources.warehouse import WarehouseResource
from tests.fakes.harness import (
    Ingestion,
    between,
    check_outcomes,
    coinbase,
    live_universe,
    materialization_metadata,
    oanda,
    real_bars,
    utc,
)
from tests.fakes.venues import Fault, _FakeVenue


@dataclass(frozen=True)
class Case:
    """A fault, the outcome it must have, and what proves it."""

    name: str
    faults: tuple[Fault, ...]
    outcome: Literal["complete", "quarantined", "error"]
    counter: str | None = None  # an acquisition counter the fault must raise
    rule: str | None = None  # the quarantine rule of a bad bar
    reason: str | None = None  # a part of its reason (or of the error)
    min_seconds: float = 0.0
    open_candle: bool = False  # run while the day's last candle is still forming


CASES = [
    Case(
        "429 with Retry-After",
        (Fault("rate_limit", retry_after="1"),),
        "complete",
        counter="retries",
        min_seconds=1.0,
    ),
    Case("429 without Retry-After", (Fault("rate_limit"),), "complete", counter="retries"),
    Case("500", (Fault("server_error"),), "complete", counter="retries"),
    Case("timeout", (Fault("timeout", delay_s=1.0),), "complete", counter="retries"),
    Case("short page", (Fault("short_page", keep=5),), "complete", counter="refetches"),
    Case("duplicate candles", (Fault("duplicates"),), "complete"),
    Case("out-of-order candles", (Fault("out_of_order"),), "complete"),
    Case("unclosed last candle", (), "complete", counter="unclosed_dropped", open_candle=True),
    Case(
        "high below low",
        (Fault("high_below_low"),),
        "quarantined",
        rule="high_ge_open",
        reason="< open",
    ),
    Case(
        "negative price",
        (Fault("negative_price"),),
        "quarantined",
        rule="prices_positive",
        reason="prices must be > 0: low -",
    ),
    Case("NaN price", (Fault("nan_price"),), "quarantined", rule="close_not_null", reason="NaN"),
    Case("401", (Fault("unauthorized"),), "error", reason="401"),
    Case(
        "5xx that never ends",
        (Fault("server_error"),) * 6,
        "error",
        reason="still failing after 6 attempts",
    ),
]


@dataclass
class Venue:
    """A running venue, a warehouse with one real day per case already stored."""

    ingestion: Ingestion
    server: _FakeVenue
    instrument: str
    real: pl.DataFrame
    now: datetime
    days: list[date]  # one per case, stored by the fixture; then the open-candle day
    interval: timedelta

    def day_bars(self, day: date, until: datetime | None = None) -> pl.DataFrame:
        start = _start(day)
        return between(self.real, start, min(start + timedelta(days=1), until or self.now))

    def stored_bars(self) -> pl.DataFrame:
        return between(self.real, _start(self.days[0]), _start(self.days[-1]))


def _start(day: date) -> datetime:
    return utc(day.year, day.month, day.day)


def _weekdays(first: date, n: int) -> list[date]:
    days: list[date] = []
    day = first
    while len(days) < n:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


@pytest.fixture(scope="module", params=["coinbase", "oanda"])
def venue(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Venue]:
    tmp: Path = tmp_path_factory.mktemp(request.param)
    with DagsterInstance.ephemeral() as instance:
        ingestion = Ingestion(
            universe=live_universe(tmp),
            warehouse=WarehouseResource(path=str(tmp / "warehouse.duckdb")),
            instance=instance,
        )
        if request.param == "coinbase":
            now = utc(2023, 3, 31)
            days = [date(2023, 3, 1) + timedelta(days=i) for i in range(1 + len(CASES))]
            with coinbase(now) as server:
                ingestion.coinbase_url = server.url
                yield _prepared(ingestion, server, "BTC_USDT", real_bars("BTC_USDT_5m"), now, days)
        else:
            now = utc(2024, 4, 30)
            days = _weekdays(date(2024, 2, 5), 1 + len(CASES))
            with oanda(now) as server:
                ingestion.oanda_url = server.url
                yield _prepared(ingestion, server, "GBP_USD", real_bars("GBP_USD_1h"), now, days)


def _prepared(
    ingestion: Ingestion,
    server: _FakeVenue,
    instrument: str,
    real: pl.DataFrame,
    now: datetime,
    days: list[date],
) -> Venue:
    venue = Venue(ingestion, server, instrument, real, now, days, server.interval)
    result = ingestion.run(instrument, days[0], days[-2], now=now)
    assert result.success
    assert ingestion.raw(instrument).equals(venue.stored_bars())
    return venue


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault(venue: Venue, case: Case) -> None:
    now = venue.now
    if case.open_candle:  # a fresh day; the clock stands 2 minutes into its 7th bar
        day = venue.days[-1]
        now = _start(day) + 6 * venue.interval + timedelta(minutes=2)
    else:
        day = venue.days[CASES.index(case)]
    warehouse = venue.ingestion.warehouse
    raw_before = venue.ingestion.raw(venue.instrument)
    validated_before = warehouse.read_bars("validated_bars", venue.instrument)
    venue.server.faults.clear()
    venue.server.now = now
    venue.server.inject(*case.faults)
    started = time.monotonic()
    try:
        result = venue.ingestion.run(
            venue.instrument,
            day,
            day,
            now=now,
            run_config={"ops": {"raw_bars": {"config": {"refetch": True}}}},
        )
    finally:
        venue.server.now = venue.now
    elapsed = time.monotonic() - started

    # No loss: every other day is untouched, raw and validated.
    def other_days(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.filter(pl.col("ts").dt.date() != day)

    raw = venue.ingestion.raw(venue.instrument)
    assert other_days(raw).equals(other_days(raw_before))
    validated = warehouse.read_bars("validated_bars", venue.instrument)
    assert other_days(validated).equals(other_days(validated_before))

    summary = materialization_metadata(result, "raw_bars")["by_instrument"][venue.instrument]
    # the real bars of the day that had closed by ``now`` (the open one opened 2 minutes ago)
    expected = venue.day_bars(day, until=now - timedelta(minutes=2) if case.open_candle else now)
    on_day = raw.filter(pl.col("ts").dt.date() == day)
    if case.outcome == "error":
        assert not result.success
        assert case.reason and case.reason in summary["error"]
        assert on_day.equals(expected)  # the day stored before the failed fetch is intact
        return

    checks = check_outcomes(result)
    assert elapsed >= case.min_seconds
    if case.counter:
        assert summary[case.counter] >= 1, summary
    if case.outcome == "complete":
        assert result.success, (summary, checks)
        assert on_day.equals(expected)  # every real bar, once, in order
        if case.open_candle:
            assert on_day["ts"].max() == now - timedelta(minutes=2) - venue.interval
        return

    # Quarantined: raw keeps the bar as delivered, the validated bars do not have it, and the
    # blocking quarantine check decides whether the run goes on (1 bad bar of 24 is > 1 %).
    assert case.rule and case.reason
    assert on_day.height == expected.height
    bad = venue.server.corrupted[-1]
    quarantine = warehouse.read_table(
        "SELECT ts, rule, reason FROM bars_quarantine WHERE instrument = ? AND ts >= ? AND ts < ?",
        [venue.instrument, _start(day), _start(day) + timedelta(days=1)],
    )
    assert set(quarantine["ts"].to_list()) == {bad}
    reasons = dict(zip(quarantine["rule"], quarantine["reason"], strict=True))
    assert case.rule in reasons and case.reason in reasons[case.rule], reasons
    fine = warehouse.read_bars_by_interval(
        venue.instrument, venue.ingestion.universe.fetch_interval(venue.instrument)
    )
    kept = fine.filter(pl.col("ts").dt.date() == day)
    assert kept.height == expected.height - 1 and bad not in kept["ts"].to_list()
    within_limit = 1 / expected.height <= 0.01
    assert checks == {
        "gx_suite_passes": True,
        "quarantine_rate_within_limit": within_limit,
        "bar_spacing_regular": True,
        "bars_fresh": True,
    }
    assert result.success is within_limit
