"""Rate limiter, retry policy and page cleaning shared by every remote source."""

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from ffe_dagster.config import CcxtSourceSpec, OandaSourceSpec
from ffe_dagster.core.data.bars import OHLCV_SCHEMA, MarketKind, MarketSchedule
from ffe_dagster.resources.market_data import CcxtSourceConfig, OandaSourceConfig
from ffe_dagster.sources.base import (
    DEFAULT_DEADLINE_S,
    DEFAULT_OUTAGE_BUDGET_S,
    FetchStats,
    MalformedReply,
    PermanentSourceError,
    RateLimiter,
    RequestRunner,
    RetriesExhaustedError,
    RetryPolicy,
    Transient,
    TransientReply,
    clean_page,
    interior_holes,
    on_grid,
    paginate,
    parse_retry_after,
)
from ffe_dagster.sources.ccxt_source import CcxtSource
from ffe_dagster.sources.oanda import OandaSource


class Clock:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_rate_limiter_spaces_requests_evenly() -> None:
    clock = Clock()
    limiter = RateLimiter(4, clock=clock.time, sleep=clock.sleep)
    waits = [limiter.acquire() for _ in range(5)]
    assert waits == [0.0, 0.25, 0.25, 0.25, 0.25]
    clock.now += 10  # idle time is not saved up for a burst
    assert limiter.acquire() == 0.0
    assert limiter.acquire() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="> 0"):
        RateLimiter(0)


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=8.0)
    rng = random.Random(1)
    for attempt, ceiling in enumerate([1, 2, 4, 8, 8]):
        delays = [policy.delay(attempt, None, rng) for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not fixed
    assert policy.delay(0, 30.0, rng) == 30.0


def test_retry_after_parsing() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = datetime(2024, 3, 1, 12, tzinfo=UTC)
    assert parse_retry_after("Fri, 01 Mar 2024 12:00:07 GMT", now) == 7.0


def test_defaults_are_a_120_s_outage_budget_and_a_30_s_deadline() -> None:
    assert DEFAULT_OUTAGE_BUDGET_S == 120.0 and DEFAULT_DEADLINE_S == 30.0
    assert RetryPolicy().outage_budget_s == 120.0
    for settings in (CcxtSourceSpec(), OandaSourceSpec(), CcxtSourceConfig(), OandaSourceConfig()):
        assert (settings.outage_budget_s, settings.deadline_s) == (120.0, 30.0)
    assert CcxtSource().deadline_s == 30.0 and OandaSource(token="t").deadline_s == 30.0
    assert CcxtSource()._runner.policy.outage_budget_s == 120.0


def _runner(clock: Clock, classify: Callable[[BaseException], Transient | None], **policy: float):
    return RequestRunner(
        venue="test",
        limiter=RateLimiter(1000, clock=clock.time, sleep=clock.sleep),
        policy=RetryPolicy(**policy),  # type: ignore[arg-type]
        classify=classify,
        sleep=clock.sleep,
        rng=random.Random(0),
    )


def _timeouts(exc: BaseException) -> Transient | None:
    if isinstance(exc, TimeoutError):
        return Transient("timeout", retry_after_s=None)
    if isinstance(exc, PermissionError):
        raise PermanentSourceError("rejected") from exc
    return None


def _failing(exc: BaseException, times: int = 10**9) -> Callable[[], str]:
    calls: list[int] = []

    def request() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise exc
        return "ok"

    return request


def test_runner_retries_until_the_outage_budget_is_spent_not_a_count() -> None:
    clock = Clock()
    runner = _runner(clock, _timeouts, outage_budget_s=120.0, base_delay_s=1.0, max_delay_s=30.0)
    stats = FetchStats()
    # 8 failures in a row: more than a count of 6 attempts allowed, but the first 7 waits
    # (at most 1+2+4+8+16+30+30 = 91 s) leave budget for an 8th, so the request gets through.
    assert runner.run(_failing(TimeoutError(), times=8), stats, "page") == "ok"
    assert (stats.requests, stats.retries) == (9, 8)
    assert stats.retry_reasons == {"timeout": 8}

    clock = Clock()
    runner = _runner(clock, _timeouts, outage_budget_s=120.0, base_delay_s=1.0, max_delay_s=30.0)
    with pytest.raises(RetriesExhaustedError) as error:
        runner.run(_failing(TimeoutError()), FetchStats(), "page")
    # the waits add up to exactly the budget (the last one is cut to what was left)
    assert sum(clock.slept) == pytest.approx(120.0)
    assert max(clock.slept) <= 30.0
    message = str(error.value)
    assert "test: page still failing after" in message
    assert "and 120.0 s of backoff (the 120 s outage budget spent; timeout)" in message


def test_an_outage_shorter_than_the_budget_never_fails() -> None:
    # Whatever the jitter draws, a server down for 119 s of waiting answers the next attempt.
    for seed in range(200):
        clock = Clock()
        runner = _runner(clock, _timeouts, outage_budget_s=120.0)
        runner.rng = random.Random(seed)
        down_until = clock.now + 119.0

        def request(clock: Clock = clock, down_until: float = down_until) -> str:
            if clock.now < down_until:
                raise TimeoutError
            return "ok"

        assert runner.run(request, FetchStats(), "page") == "ok"


def test_runner_bounds_malformed_replies_and_never_retries_permanent() -> None:
    clock = Clock()
    runner = _runner(clock, _timeouts)
    malformed = MalformedReply("test GET /x answered HTTP 200 with <html>", Transient("malformed"))
    stats = FetchStats()
    with pytest.raises(RetriesExhaustedError, match=r"4 malformed replies spent.*<html>"):
        runner.run(_failing(malformed), stats, "page")
    assert stats.requests == 4  # the first answer and 3 retries
    stats = FetchStats()
    assert runner.run(_failing(TransientReply("503", Transient("HTTP 503")), 2), stats, "p")
    assert stats.retry_reasons == {"HTTP 503": 2}
    stats = FetchStats()
    with pytest.raises(PermanentSourceError, match=r"^page: rejected"):
        runner.run(_failing(PermissionError()), stats, "page")
    assert stats.requests == 1
    with pytest.raises(KeyError):  # unknown exceptions are bugs: re-raised unchanged
        runner.run(_failing(KeyError("x")), FetchStats(), "page")


def _bars(ts: list[datetime]) -> pl.DataFrame:
    n = len(ts)
    return pl.DataFrame(
        {
            "ts": ts,
            "open": [1.0] * n,
            "high": [2.0] * n,
            "low": [0.5] * n,
            "close": [1.0] * n,
            "volume": [1.0] * n,
        },
        schema=OHLCV_SCHEMA,
    )


def test_grid_and_interior_holes() -> None:
    step = timedelta(minutes=5)
    t0 = datetime(2024, 1, 1, 12, tzinfo=UTC)
    ts = pl.Series([t0, t0 + step, t0 + 2 * step + timedelta(minutes=3), t0 + 5 * step])
    assert on_grid(ts, step).to_list() == [t0, t0 + step, t0 + 5 * step]
    crypto = MarketSchedule.for_market(MarketKind.CRYPTO)
    assert interior_holes(ts, step, crypto) == [(t0 + 2 * step, t0 + 5 * step)]


def test_paginate_asks_again_for_an_empty_page_and_for_holes() -> None:
    step = timedelta(minutes=5)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    full = [start + i * step for i in range(12)]
    answers = [
        _bars([]),  # empty while the market was open: asked once more
        _bars(full[:4] + full[8:]),  # a hole of 4 bars inside: asked once more
        _bars(full[4:8]),
    ]
    asked: list[tuple[datetime, datetime]] = []

    def request_page(a: datetime, b: datetime) -> pl.DataFrame:
        asked.append((a, b))
        return answers.pop(0)

    stats = FetchStats()
    crypto = MarketSchedule.for_market(MarketKind.CRYPTO)
    pages = list(
        paginate(
            request_page,
            start,
            start + 12 * step,
            interval=step,
            page_bars=12,
            now=start + timedelta(days=1),
            schedule=crypto,
            stats=stats,
        )
    )
    assert [p.bars["ts"].to_list() for p in pages] == [full]
    end = start + 12 * step
    assert asked == [(start, end), (start, end), (full[4], full[8])]
    assert stats.refetches == 2


def test_clean_page_sorts_dedupes_and_drops_open_and_out_of_range_bars() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    step = timedelta(minutes=5)
    ts = [start + step * i for i in (3, 1, 2, 2, 0, 5, -1)]
    page = pl.DataFrame(
        {
            "ts": ts,
            "open": [1.0] * 7,
            "high": [2.0] * 7,
            "low": [0.5] * 7,
            "close": [float(i) for i in range(7)],
            "volume": [1.0] * 7,
        },
        schema=OHLCV_SCHEMA,
    )
    stats = FetchStats()
    bars = clean_page(
        page, start, start + 5 * step, interval=step, now=start + 3 * step + step / 2, stats=stats
    )
    assert bars["ts"].to_list() == [start, start + step, start + 2 * step]
    assert bars["close"].to_list() == [4.0, 1.0, 3.0]  # the later copy of a duplicate wins
    assert (stats.duplicates_dropped, stats.out_of_range_dropped, stats.unclosed_dropped) == (
        1,
        2,
        1,
    )
    assert stats.unsorted_pages == 1
