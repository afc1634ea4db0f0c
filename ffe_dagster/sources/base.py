"""What every market-data source shares: the interface, pagination, rate limiting and retries.

A source turns ``(instrument, start, end)`` into pages of bars in the OHLCV schema of
``ffe_dagster.core.bars``: sorted, one row per ``ts``, inside ``[start, end)``, and only candles
that had closed by ``now``. Pages come in time order, each with the span it covers, so a caller
can store every completed day as soon as it is in (a run killed half way keeps those days).
"""

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Protocol, TypeVar

import polars as pl

from ffe_dagster.core.bars import (
    Instrument,
    MarketSchedule,
    closed_bars,
    deduplicate_bars,
    empty_bars,
    floor_time,
)

T = TypeVar("T")


class SourceError(RuntimeError):
    """A market-data source could not deliver bars; the message says why and what to do."""


class PermanentSourceError(SourceError):
    """Retrying cannot help: unknown symbol, rejected credentials, invalid request."""


class RetriesExhaustedError(SourceError):
    """A transient error (timeout, 429, 5xx, network) persisted through every attempt."""


@dataclass(frozen=True, slots=True)
class Transient:
    """A classified transient failure: a short reason and the server's Retry-After, if any."""

    reason: str
    retry_after_s: float | None = None


@dataclass(slots=True)
class FetchStats:
    """Counters of one source over a run, for the acquisition summary.

    ``requests`` counts every HTTP request (retries included, as the venue counts them);
    ``rate_wait_s`` is the time spent waiting on our own rate limiter and ``backoff_s`` the time
    slept between retries.
    """

    requests: int = 0
    retries: int = 0
    pages: int = 0
    refetches: int = 0  # extra requests for a page edge that came back short
    duplicates_dropped: int = 0
    unclosed_dropped: int = 0
    incomplete_dropped: int = 0
    out_of_range_dropped: int = 0
    unsorted_pages: int = 0
    rate_wait_s: float = 0.0
    backoff_s: float = 0.0
    retry_reasons: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """The counters as plain values (for Dagster metadata)."""
        return {
            "requests": self.requests,
            "retries": self.retries,
            "pages": self.pages,
            "refetches": self.refetches,
            "duplicates_dropped": self.duplicates_dropped,
            "unclosed_dropped": self.unclosed_dropped + self.incomplete_dropped,
            "out_of_range_dropped": self.out_of_range_dropped,
            "unsorted_pages": self.unsorted_pages,
            "rate_wait_s": round(self.rate_wait_s, 3),
            "backoff_s": round(self.backoff_s, 3),
            "retry_reasons": dict(self.retry_reasons),
        }


@dataclass(frozen=True, slots=True)
class Page:
    """Bars of ``[start, end)``: every closed bar the venue has in that span."""

    bars: pl.DataFrame
    start: datetime
    end: datetime


class BarSource(Protocol):
    """The one interface of ccxt, OANDA and file sources.

    ``interval`` is the bar interval the source delivers (the finest, fetched once);
    ``resumable`` is True when a day fetched completely need not be fetched again (remote
    venues, whose past bars do not change), False for files a user may edit.
    """

    @property
    def name(self) -> str:
        """A short label of the venue (``ccxt:coinbaseexchange``, ``oanda:practice``)."""
        ...

    @property
    def interval(self) -> str:
        """The bar interval delivered (``5m``)."""
        ...

    @property
    def resumable(self) -> bool:
        """True when completely fetched days need not be fetched again."""
        ...

    def fetch_pages(
        self,
        instrument: Instrument,
        start: datetime,
        end: datetime,
        *,
        now: datetime,
        stats: FetchStats,
    ) -> Iterator[Page]:
        """Pages covering ``[start, min(end, now))`` in time order."""
        ...


def fetch_all(
    source: BarSource, instrument: Instrument, start: datetime, end: datetime, *, now: datetime
) -> tuple[pl.DataFrame, FetchStats]:
    """Every bar of ``[start, end)`` in one frame, with the counters of the fetch."""
    stats = FetchStats()
    pages = [p.bars for p in source.fetch_pages(instrument, start, end, now=now, stats=stats)]
    bars = pl.concat(pages) if pages else empty_bars()
    return deduplicate_bars(bars)[0], stats


class RateLimiter:
    """At most ``max_per_second`` request starts per second, evenly spaced (no bursts).

    Even spacing keeps a long backfill just under the venue's limit instead of bursting into it
    and collecting 429s; thread-safe so instruments fetched in parallel share one budget.
    """

    def __init__(
        self,
        max_per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_per_second <= 0:
            raise ValueError(f"max_requests_per_second must be > 0, got {max_per_second}")
        self.spacing_s = 1.0 / max_per_second
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Wait for the next slot; return the seconds waited."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.spacing_s
        wait = slot - now
        if wait > 0:
            self._sleep(wait)
        return wait


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt n (from 0) waits between half and all of
    ``min(max_delay_s, base_delay_s * 2**n)``, and never less than the server's Retry-After."""

    max_attempts: int = 6
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0

    def delay(self, attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
        """Seconds to sleep before the next attempt."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2**attempt)
        backoff = ceiling / 2 + rng.uniform(0, ceiling / 2)  # jitter: clients do not stampede
        return max(backoff, retry_after_s or 0.0)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    reference = now or datetime.now(moment.tzinfo)
    return max(0.0, (moment - reference).total_seconds())


@dataclass(slots=True)
class RequestRunner:
    """Runs one venue request under the rate limit, retrying transient failures.

    ``classify`` maps an exception to ``Transient`` (retry) or raises ``PermanentSourceError``
    itself; anything it returns None for is re-raised unchanged.
    """

    venue: str
    limiter: RateLimiter
    policy: RetryPolicy
    classify: Callable[[BaseException], Transient | None]
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def run(self, request: Callable[[], T], stats: FetchStats, what: str) -> T:
        """``request()``'s result; raises ``RetriesExhaustedError`` or ``PermanentSourceError``."""
        for attempt in range(self.policy.max_attempts):
            stats.rate_wait_s += self.limiter.acquire()
            stats.requests += 1
            try:
                return request()
            except PermanentSourceError:
                raise
            except Exception as exc:
                transient = self.classify(exc)
                if transient is None:
                    raise
                if attempt + 1 == self.policy.max_attempts:
                    raise RetriesExhaustedError(
                        f"{self.venue}: {what} still failing after {self.policy.max_attempts} "
                        f"attempts ({transient.reason}); try again later or lower the request rate"
                    ) from exc
                stats.retries += 1
                stats.retry_reasons[transient.reason] = (
                    stats.retry_reasons.get(transient.reason, 0) + 1
                )
                pause = self.policy.delay(attempt, transient.retry_after_s, self.rng)
                stats.backoff_s += pause
                self.sleep(pause)
        raise AssertionError("unreachable: the loop returns or raises")


def clean_page(
    bars: pl.DataFrame,
    start: datetime,
    end: datetime,
    *,
    interval: timedelta,
    now: datetime,
    stats: FetchStats,
) -> pl.DataFrame:
    """One venue answer made trustworthy: sorted, duplicates dropped, only ``[start, end)``,
    only candles closed by ``now``; each correction is counted in ``stats``."""
    if bars.height and not bars["ts"].is_sorted():
        stats.unsorted_pages += 1
    unique, dropped = deduplicate_bars(bars)
    stats.duplicates_dropped += dropped
    inside = unique.filter((pl.col("ts") >= start) & (pl.col("ts") < end))
    stats.out_of_range_dropped += unique.height - inside.height
    closed = closed_bars(inside, interval, now)
    stats.unclosed_dropped += inside.height - closed.height
    return closed


def paginate(
    request_page: Callable[[datetime, datetime], pl.DataFrame],
    start: datetime,
    end: datetime,
    *,
    interval: timedelta,
    page_bars: int,
    now: datetime,
    schedule: MarketSchedule,
    stats: FetchStats,
    max_refetch_depth: int = 20,
) -> Iterator[Page]:
    """Pages of at most ``page_bars`` bars over ``[start, min(end, now))``.

    ``request_page(a, b)`` returns the cleaned bars of ``[a, b)`` (see ``clean_page``). Windows
    are fixed, so the number of requests is known up front. When a page comes back with bars
    but without the ones at its start or its end while the market was open there, that edge is
    asked for again (a short page: the venue cut its answer); if the second answer is empty
    too, the venue has no bars there and the gap is real. Holes inside a page are real gaps.
    """
    step = page_bars * interval
    stop = min(end, now)
    closed_until = min(stop, floor_time(now, interval))
    cursor = floor_time(start, interval)

    def window(a: datetime, b: datetime, depth: int) -> list[pl.DataFrame]:
        bars = request_page(a, b)
        if bars.height == 0 or depth >= max_refetch_depth:
            return [bars]
        first, last = bars["ts"].min(), bars["ts"].max()
        assert isinstance(first, datetime) and isinstance(last, datetime)
        pieces = [bars]
        if schedule.open_time(a, first) >= interval:
            stats.refetches += 1
            pieces = [*window(a, first, depth + 1), *pieces]
        tail = last + interval
        edge = min(b, closed_until)
        if schedule.open_time(tail, edge) >= interval:
            stats.refetches += 1
            pieces = [*pieces, *window(tail, edge, depth + 1)]
        return pieces

    while cursor < stop:
        b = min(cursor + step, stop)
        pieces = window(cursor, b, 0)
        stats.pages += 1
        bars, dropped = deduplicate_bars(pl.concat(pieces))
        stats.duplicates_dropped += dropped
        yield Page(bars=bars, start=cursor, end=max(cursor, min(b, closed_until)))
        cursor = b
