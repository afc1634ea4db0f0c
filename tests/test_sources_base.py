"""Rate limiter, retry policy and page cleaning shared by every remote source."""

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from ffe_dagster.core.bars import OHLCV_SCHEMA
from ffe_dagster.sources.base import (
    FetchStats,
    PermanentSourceError,
    RateLimiter,
    RequestRunner,
    RetriesExhaustedError,
    RetryPolicy,
    Transient,
    clean_page,
    parse_retry_after,
)


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
    policy = RetryPolicy(max_attempts=6, base_delay_s=1.0, max_delay_s=8.0)
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


def test_runner_retries_transient_then_gives_up_and_never_retries_permanent() -> None:
    clock = Clock()
    calls: list[str] = []

    def classify(exc: BaseException) -> Transient | None:
        if isinstance(exc, TimeoutError):
            return Transient("timeout", retry_after_s=None)
        if isinstance(exc, PermissionError):
            raise PermanentSourceError("rejected") from exc
        return None

    runner = RequestRunner(
        venue="test",
        limiter=RateLimiter(1000, clock=clock.time, sleep=clock.sleep),
        policy=RetryPolicy(max_attempts=3, base_delay_s=1.0),
        classify=classify,
        sleep=clock.sleep,
        rng=random.Random(0),
    )

    def flaky() -> str:
        calls.append("x")
        if len(calls) < 3:
            raise TimeoutError
        return "ok"

    stats = FetchStats()
    assert runner.run(flaky, stats, "page") == "ok"
    assert (stats.requests, stats.retries) == (3, 2)
    assert stats.retry_reasons == {"timeout": 2}

    def always(exc: BaseException) -> Callable[[], None]:
        def request() -> None:
            raise exc

        return request

    with pytest.raises(RetriesExhaustedError, match="test: page still failing after 3"):
        runner.run(always(TimeoutError()), FetchStats(), "page")
    stats = FetchStats()
    with pytest.raises(PermanentSourceError):
        runner.run(always(PermissionError()), stats, "page")
    assert stats.requests == 1
    with pytest.raises(KeyError):  # unknown exceptions are bugs: re-raised unchanged
        runner.run(always(KeyError("x")), FetchStats(), "page")


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
