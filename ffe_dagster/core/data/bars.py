"""OHLCV bar schema, normalization, market calendars and gap detection.

Every source returns bars in one schema: ``ts`` is the bar *open* time in UTC (microseconds),
followed by ``open, high, low, close, volume`` as float64. Forex feeds without volume carry nulls.
"""

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum

import polars as pl

TS_DTYPE = pl.Datetime(time_unit="us", time_zone="UTC")
OHLCV_SCHEMA: dict[str, pl.DataType] = {
    "ts": TS_DTYPE,
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
}
PRICE_COLUMNS = ("open", "high", "low", "close")
GAP_SCHEMA: dict[str, pl.DataType] = {
    "gap_start": TS_DTYPE,  # open time of the first missing bar
    "gap_end": TS_DTYPE,  # open time of the next bar present (or the window end)
    "missing_bars": pl.Int64(),
    "open_missing_bars": pl.Int64(),  # missing while the market schedule says it was open
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class MarketKind(StrEnum):
    """Which trading calendar an instrument follows."""

    CRYPTO = "crypto"
    FOREX = "forex"


@dataclass(frozen=True, slots=True)
class Instrument:
    """One tradable instrument of the universe.

    ``key`` is the Dagster partition key (``BTC_USDT``); ``symbol`` is the venue symbol
    (``BTC/USDT`` for ccxt, ``EUR_USD`` for OANDA); ``has_volume`` is False for feeds that publish
    no volume (Dukascopy forex); ``source`` names the configured source that delivers its bars.
    """

    key: str
    symbol: str
    market: MarketKind
    has_volume: bool = True
    source: str = "files"

    def bars_per_year(self, interval: timedelta) -> float:
        """Bars of ``interval`` per year its market is open: the annualization factor of its
        Sharpe and Sortino ratios (``MarketSchedule.bars_per_year``; 1-hour bars: crypto 8,766,
        forex 6,227.14)."""
        return MarketSchedule.for_market(self.market).bars_per_year(interval)


def interval_to_timedelta(interval: str) -> timedelta:
    """Parse ``5m``, ``15m``, ``1h``, ``4h`` or ``1d`` into a timedelta."""
    units = {"m": "minutes", "h": "hours", "d": "days"}
    unit = interval[-1:]
    if unit not in units or not interval[:-1].isdigit() or int(interval[:-1]) <= 0:
        raise ValueError(f"unsupported bar interval {interval!r}; use e.g. 5m, 15m, 1h, 1d")
    return timedelta(**{units[unit]: int(interval[:-1])})


def floor_time(moment: datetime, step: timedelta) -> datetime:
    """``moment`` rounded down to a multiple of ``step`` since the Unix epoch (UTC)."""
    return moment - (moment - _EPOCH) % step


def normalize_bars(frame: pl.DataFrame) -> pl.DataFrame:
    """Cast a frame to the OHLCV schema (extra columns dropped), sorted by ``ts``.

    Raises ``ValueError`` naming the missing columns when the frame lacks any of them.
    NaN volumes become nulls so "no volume published" has one representation.
    """
    missing = [c for c in OHLCV_SCHEMA if c not in frame.columns]
    if missing:
        raise ValueError(f"bars are missing columns {missing}; got {frame.columns}")
    out = frame.select(
        pl.col("ts").cast(TS_DTYPE),
        *[pl.col(c).cast(pl.Float64) for c in (*PRICE_COLUMNS, "volume")],
    )
    return out.with_columns(pl.col("volume").fill_nan(None)).sort("ts")


def empty_bars() -> pl.DataFrame:
    """An empty frame in the OHLCV schema."""
    return pl.DataFrame(schema=OHLCV_SCHEMA)


def deduplicate_bars(bars: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Bars sorted by ``ts`` with one row per ``ts`` (the last one received wins), and the number
    of rows dropped. A venue that repeats a candle across pages repeats the same bar; when the
    copies differ, the later answer is the venue's latest word on that bar."""
    unique = bars.unique(subset="ts", keep="last", maintain_order=True).sort("ts")
    return unique, bars.height - unique.height


def closed_bars(bars: pl.DataFrame, interval: timedelta, now: datetime) -> pl.DataFrame:
    """Only the bars that had closed by ``now`` (``ts + interval <= now``): the candle still
    forming would be stored with values that later change."""
    return bars.filter(pl.col("ts") + interval <= now)


@dataclass(frozen=True, slots=True)
class MarketSchedule:
    """When a market is closed, in UTC.

    ``weekly_close`` / ``weekly_reopen`` are (weekday, time) pairs with Monday = 0: the market is
    closed from the close to the following reopen every week. Each ``holidays`` entry
    (month, day) closes the market from the weekly close time on the day before to the reopen
    time on that day. An empty schedule (crypto) never closes.
    """

    weekly_close: tuple[int, time] | None = None
    weekly_reopen: tuple[int, time] | None = None
    holidays: tuple[tuple[int, int], ...] = ()

    @classmethod
    def for_market(cls, market: MarketKind) -> "MarketSchedule":
        """Crypto never closes; forex closes Friday 22:00 to Sunday 22:00 UTC (docs/spec.md §2)
        and on Christmas Day and New Year's Day, when the interbank market does not trade."""
        if market is MarketKind.CRYPTO:
            return cls()
        return cls(
            weekly_close=(4, time(22)),
            weekly_reopen=(6, time(22)),
            holidays=((12, 25), (1, 1)),
        )

    @property
    def always_open(self) -> bool:
        """True for a market that never closes."""
        return self.weekly_close is None and not self.holidays

    def closed_periods(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """The closures overlapping ``[start, end)``, clipped to it, merged and sorted."""
        if self.always_open or end <= start:
            return []
        periods: list[tuple[datetime, datetime]] = []
        close_t, reopen_t = self._clock_times()
        day = start.date() - timedelta(days=8)
        while day <= end.date():
            for a, b in self._closures_starting(day, close_t, reopen_t):
                lo, hi = max(a, start), min(b, end)
                if lo < hi:
                    periods.append((lo, hi))
            day += timedelta(days=1)
        periods.sort()
        merged: list[tuple[datetime, datetime]] = []
        for a, b in periods:
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        return merged

    def _clock_times(self) -> tuple[time, time]:
        close = self.weekly_close[1] if self.weekly_close else time(22)
        reopen = self.weekly_reopen[1] if self.weekly_reopen else time(22)
        return close, reopen

    def _closures_starting(
        self, day: date, close_t: time, reopen_t: time
    ) -> list[tuple[datetime, datetime]]:
        out: list[tuple[datetime, datetime]] = []
        if self.weekly_close and self.weekly_reopen and day.weekday() == self.weekly_close[0]:
            days = (self.weekly_reopen[0] - self.weekly_close[0]) % 7 or 7
            out.append(
                (
                    datetime.combine(day, close_t, UTC),
                    datetime.combine(day + timedelta(days=days), reopen_t, UTC),
                )
            )
        holiday = day + timedelta(days=1)
        if (holiday.month, holiday.day) in self.holidays:
            out.append(
                (datetime.combine(day, close_t, UTC), datetime.combine(holiday, reopen_t, UTC))
            )
        return out

    def open_time(self, start: datetime, end: datetime) -> timedelta:
        """How long the market was open within ``[start, end)``."""
        if end <= start:
            return timedelta(0)
        closed = sum((b - a for a, b in self.closed_periods(start, end)), timedelta(0))
        return end - start - closed

    def is_open(self, moment: datetime) -> bool:
        """True when the market trades at ``moment``."""
        return not self.closed_periods(moment, moment + timedelta(microseconds=1))

    def bars_per_year(self, interval: timedelta) -> float:
        """Bars of ``interval`` in an average year of open market, from this schedule.

        The open time over the 28 years 2001-2028 (10,227 days = 28 x 365.25; every date falls on
        each weekday exactly 4 times), per year, divided by ``interval``. Crypto: 365.25 x 24 =
        8,766 hours. Forex (closed Fri 22:00 to Sun 22:00 UTC: 120 of 168 hours open, less the
        24-hour Christmas and New Year closures on the 5 of 7 weekdays they do not fall on the
        weekend): 8,766 x 120/168 - 2 x 24 x 5/7 = 6,227.14 hours.
        """
        if interval <= timedelta(0):
            raise ValueError(f"bar interval must be positive, got {interval}")
        return _open_time_of_cycle(self) / interval / _CYCLE_YEARS


_CYCLE_START = datetime(2001, 1, 1, tzinfo=UTC)
_CYCLE_END = datetime(2029, 1, 1, tzinfo=UTC)
_CYCLE_YEARS = 28


@functools.cache
def _open_time_of_cycle(schedule: MarketSchedule) -> timedelta:
    # Cached per schedule: the day-by-day walk over 28 years takes tens of milliseconds.
    return schedule.open_time(_CYCLE_START, _CYCLE_END)


def find_gaps(
    ts: pl.Series,
    interval: timedelta,
    schedule: MarketSchedule,
    *,
    window: tuple[datetime, datetime] | None = None,
    previous_ts: datetime | None = None,
) -> pl.DataFrame:
    """Runs of missing bars in the sorted, unique timestamps ``ts`` (schema ``GAP_SCHEMA``).

    ``open_missing_bars`` counts the missing bar slots that fall in open market hours, so a
    weekend is not a gap for forex while the same hole is one for crypto. With ``window``
    ``(start, end)``, the stretches before the first bar (from ``previous_ts`` when given, else
    from ``start``) and after the last bar up to ``end`` count too.
    """
    stamps: list[datetime] = ts.to_list()
    spans: list[tuple[datetime, datetime]] = []
    before = previous_ts
    if before is None and window is not None:
        before = window[0] - interval  # the bar that would precede the window's first slot
    for moment in stamps:
        if before is not None and moment - before > interval:
            spans.append((before + interval, moment))
        before = moment
    if window is not None and before is not None and window[1] - before > interval:
        spans.append((before + interval, window[1]))
    rows = [(a, b, -(-(b - a) // interval), schedule.open_time(a, b) // interval) for a, b in spans]
    return pl.DataFrame(rows, schema=GAP_SCHEMA, orient="row")
