"""What every market-data source shares: the interface, pagination, rate limiting and retries.

A source turns ``(instrument, start, end)`` into pages of bars in the OHLCV schema of
``ffe_dagster.core.data.bars``: sorted, one row per ``ts``, inside ``[start, end)``, and only
candles that had closed by ``now``. Pages come in time order, each with the span it covers, so a
caller can store every completed day as soon as it is in (a run killed half way keeps those days).
"""

import itertools
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Protocol, TypeVar

import polars as pl

from ffe_dagster.core.data.bars import (
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
    """A transient error (timeout, 429, 5xx, network, a malformed reply) outlasted the retry
    budget."""


@dataclass(frozen=True, slots=True)
class Transient:
    """A classified transient failure: a short reason and the server's Retry-After, if any."""

    reason: str
    retry_after_s: float | None = None


class TransientReply(SourceError):
    """A venue reply that is worth asking again (408, 429, 5xx, a missed deadline); the
    message names the venue, the endpoint, the HTTP status and what the venue said."""

    def __init__(self, message: str, transient: Transient) -> None:
        super().__init__(message)
        self.transient = transient


class MalformedReply(TransientReply):
    """A 2xx reply whose body does not parse into the venue's schema (an HTML proxy page,
    truncated JSON, another shape): never an empty page; retried a bounded number of times."""


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


DEFAULT_OUTAGE_BUDGET_S = 120.0
DEFAULT_DEADLINE_S = 30.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded by time rather than by a count of attempts.

    Attempt n (from 0) waits between half and all of ``min(max_delay_s, base_delay_s * 2**n)``,
    and never less than the server's Retry-After. One request is retried until
    ``outage_budget_s`` seconds of backoff have been slept (the last wait is cut to what is
    left, then one more attempt is made), so an outage shorter than the budget never fails a
    run. A malformed reply is retried at most ``max_malformed`` times: a proxy page that
    persists is a configuration problem more often than an outage.
    """

    outage_budget_s: float = DEFAULT_OUTAGE_BUDGET_S
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    max_malformed: int = 3

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
class _Attempts:
    """How one request has fared so far (for the budget and the final message)."""

    count: int = 0
    waited_s: float = 0.0
    malformed: int = 0


@dataclass(slots=True)
class RequestRunner:
    """Runs one venue request under the rate limit, retrying transient failures.

    ``TransientReply`` (raised by the HTTP layer, ``ffe_dagster.sources.http``) is transient by
    construction; any other exception goes to ``classify``, which maps it to ``Transient``
    (retry) or raises ``PermanentSourceError`` itself; anything it returns None for is
    re-raised unchanged. A permanent error is re-raised with ``what`` (the instrument and the
    span asked for) in front.
    """

    venue: str
    limiter: RateLimiter
    policy: RetryPolicy
    classify: Callable[[BaseException], Transient | None]
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def run(self, request: Callable[[], T], stats: FetchStats, what: str) -> T:
        """``request()``'s result; raises ``RetriesExhaustedError`` or ``PermanentSourceError``."""
        attempts = _Attempts()
        while True:
            stats.rate_wait_s += self.limiter.acquire()
            stats.requests += 1
            attempts.count += 1
            try:
                return request()
            except PermanentSourceError as exc:
                raise PermanentSourceError(f"{what}: {exc}") from exc
            except Exception as exc:
                try:
                    transient = (
                        exc.transient if isinstance(exc, TransientReply) else self.classify(exc)
                    )
                except PermanentSourceError as permanent:
                    raise PermanentSourceError(f"{what}: {permanent}") from exc
                if transient is None:
                    raise
                attempts.malformed += isinstance(exc, MalformedReply)
                self._wait(attempts, transient, exc, stats, what)

    def _wait(
        self,
        attempts: _Attempts,
        transient: Transient,
        exc: BaseException,
        stats: FetchStats,
        what: str,
    ) -> None:
        left = self.policy.outage_budget_s - attempts.waited_s
        if left <= 0 or attempts.malformed > self.policy.max_malformed:
            bound = (
                f"{attempts.malformed} malformed replies"
                if attempts.malformed > self.policy.max_malformed
                else f"the {self.policy.outage_budget_s:g} s outage budget"
            )
            raise RetriesExhaustedError(
                f"{self.venue}: {what} still failing after {attempts.count} attempts and "
                f"{attempts.waited_s:.1f} s of backoff ({bound} spent; {transient.reason}); "
                f"last answer: {exc}; try again later or lower the request rate"
            ) from exc
        stats.retries += 1
        stats.retry_reasons[transient.reason] = stats.retry_reasons.get(transient.reason, 0) + 1
        pause = self.policy.delay(attempts.count - 1, transient.retry_after_s, self.rng)
        pause = min(pause, left)
        attempts.waited_s += pause
        stats.backoff_s += pause
        self.sleep(pause)


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


def on_grid(ts: pl.Series, interval: timedelta) -> pl.Series:
    """The timestamps of ``ts`` on ``interval``'s epoch-aligned grid (12:00, not 12:03)."""
    step_us = interval // timedelta(microseconds=1)
    return ts.filter(ts.dt.epoch("us") % step_us == 0)


def interior_holes(
    ts: pl.Series, interval: timedelta, schedule: MarketSchedule
) -> list[tuple[datetime, datetime]]:
    """Runs of grid slots missing between consecutive on-grid bars while the market was open."""
    stamps = on_grid(ts, interval).sort().to_list()
    return [
        (p + interval, q)
        for p, q in itertools.pairwise(stamps)
        if q - p > interval and schedule.open_time(p + interval, q) >= interval
    ]


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
    are fixed, so the number of requests is known up front. Only bars on the interval's grid
    count as covering a slot (an off-grid bar is kept for validation to quarantine, but its
    slot is still asked for). A page that comes back empty while the market was open is asked
    once more before it counts as "no bars". A page with bars but without those at its start or
    its end while the market was open has that edge asked for again (the venue cut its
    answer); if the second answer is empty too, the gap is real. Holes inside a page (slots
    missing between two bars while the market was open) are asked for once more, in one
    request spanning them all; what is still missing then is a real gap (Coinbase omits the
    candles of intervals without trades), and the day counts as complete.
    """
    step = page_bars * interval
    stop = min(end, now)
    closed_until = min(stop, floor_time(now, interval))
    cursor = floor_time(start, interval)

    def window(a: datetime, b: datetime, depth: int, whole: bool) -> list[pl.DataFrame]:
        # ``whole``: the page's own window (its first answer, or the one after an empty one),
        # whose interior holes are asked for; edges asked again are not searched for holes.
        bars = request_page(a, b)
        edge = min(b, closed_until)
        grid = on_grid(bars["ts"], interval)
        if depth >= max_refetch_depth:
            return [bars]
        if grid.len() == 0:
            if depth > 0 or schedule.open_time(a, edge) < interval:
                return [bars]  # asked again already, or the market had nothing to give
            stats.refetches += 1
            return [bars, *window(a, b, depth + 1, whole)]
        first, last = grid.min(), grid.max()
        assert isinstance(first, datetime) and isinstance(last, datetime)
        pieces = [bars]
        holes = interior_holes(bars["ts"], interval, schedule) if whole else []
        if holes:
            stats.refetches += 1
            pieces.append(request_page(holes[0][0], holes[-1][1]))
        if schedule.open_time(a, first) >= interval:
            stats.refetches += 1
            pieces = [*window(a, first, depth + 1, False), *pieces]
        tail = last + interval
        if schedule.open_time(tail, edge) >= interval:
            stats.refetches += 1
            pieces = [*pieces, *window(tail, edge, depth + 1, False)]
        return pieces

    while cursor < stop:
        b = min(cursor + step, stop)
        pieces = window(cursor, b, 0, True)
        stats.pages += 1
        bars, dropped = deduplicate_bars(pl.concat(pieces))
        stats.duplicates_dropped += dropped
        yield Page(bars=bars, start=cursor, end=max(cursor, min(b, closed_until)))
        cursor = b
