"""Forex bars from OANDA's v20 REST API through oandapyV20's ``InstrumentsCandles``.

Requests ask for one granularity over ``from``/``to`` windows of at most 5000 candles (OANDA's
limit); mid prices by default, bid or ask when configured. Only candles OANDA marks
``complete`` are kept. The access token comes from the environment (``OANDA_API_TOKEN``,
through Dagster's ``EnvVar``); it is sent as a header and never appears in a message or log line.
Every reply passes ``ffe_dagster.sources.http`` first: a total deadline per request, its HTTP
status classified, and its body checked against the v20 candles schema.
"""

import random
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

import polars as pl
import requests

from ffe_dagster.core.data.bars import (
    OHLCV_SCHEMA,
    Instrument,
    MarketSchedule,
    empty_bars,
    interval_to_timedelta,
)
from ffe_dagster.sources.base import (
    DEFAULT_DEADLINE_S,
    FetchStats,
    Page,
    PermanentSourceError,
    RateLimiter,
    RequestRunner,
    RetryPolicy,
    Transient,
    clean_page,
    paginate,
)
from ffe_dagster.sources.http import ReplyRules, mount_checked

MAX_CANDLES = 5000
ENVIRONMENTS = ("practice", "live")
PRICE_FIELDS = {"M": "mid", "B": "bid", "A": "ask"}
_GRANULARITIES = {
    "5s": "S5",
    "10s": "S10",
    "1m": "M1",
    "2m": "M2",
    "5m": "M5",
    "15m": "M15",
    "30m": "M30",
    "1h": "H1",
    "2h": "H2",
    "4h": "H4",
    "6h": "H6",
    "12h": "H12",
    "1d": "D",
}


def granularity(interval: str) -> str:
    """OANDA's name for a bar interval (``5m`` -> ``M5``, ``1h`` -> ``H1``)."""
    if interval not in _GRANULARITIES:
        raise ValueError(f"OANDA has no granularity for {interval!r}; use one of {_GRANULARITIES}")
    return _GRANULARITIES[interval]


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000000000Z")


def _candle_problem(i: int, candle: Any, field: str) -> str | None:
    if not isinstance(candle, dict):
        return f"candle {i} is not an object"
    if not isinstance(candle.get("time"), str) or not isinstance(candle.get("complete"), bool):
        return f"candle {i} lacks 'time' (text) or 'complete' (true/false)"
    quote = candle.get(field)
    if not isinstance(quote, dict) or not all(isinstance(quote.get(k), str) for k in "ohlc"):
        return f"candle {i} lacks '{field}' with o/h/l/c prices as text"
    return None


def v20_candles_problem(path: str, body: Any, price: str) -> str | None:
    """What keeps ``body`` (parsed JSON) from being a v20 ``InstrumentsCandles`` answer: an
    object whose ``candles`` is a list of candles, each with ``time``, ``complete`` and the
    requested price component (``mid``/``bid``/``ask``) holding o/h/l/c as text."""
    parts = path.strip("/").split("/")
    if not (len(parts) == 4 and parts[:2] == ["v3", "instruments"] and parts[3] == "candles"):
        return None  # the source asks for nothing else; any other JSON passes unchecked
    if not isinstance(body, dict) or not isinstance(body.get("candles"), list):
        return "the answer must be an object with a 'candles' list"
    field = PRICE_FIELDS[price]
    for i, candle in enumerate(body["candles"]):
        problem = _candle_problem(i, candle, field)
        if problem is not None:
            return problem
    return None


def parse_candles(
    response: Mapping[str, Any], price: str, stats: FetchStats | None = None
) -> pl.DataFrame:
    """The complete candles of an ``InstrumentsCandles`` answer as OHLCV bars.

    Prices are strings in OANDA's JSON and ``time`` carries nanoseconds; ``volume`` is the tick
    count. A candle with ``complete: false`` is still forming and is dropped (and counted).
    """
    field = PRICE_FIELDS[price]
    rows: list[tuple[str, str | None, str | None, str | None, str | None, float | None]] = []
    for candle in response.get("candles", []):
        if not candle.get("complete", False):
            if stats is not None:
                stats.incomplete_dropped += 1
            continue
        quote = candle.get(field) or {}
        rows.append(
            (
                candle["time"],
                quote.get("o"),
                quote.get("h"),
                quote.get("l"),
                quote.get("c"),
                candle.get("volume"),
            )
        )
    if not rows:
        return empty_bars()
    raw = pl.DataFrame(
        rows,
        schema=["time", "open", "high", "low", "close", "volume"],
        orient="row",
        strict=False,
    )
    return raw.select(
        pl.col("time")
        .str.to_datetime(format="%Y-%m-%dT%H:%M:%S%.fZ", time_unit="us", time_zone="UTC")
        .alias("ts"),
        *[pl.col(c).cast(pl.Float64) for c in list(OHLCV_SCHEMA)[1:]],
    )


class OandaSource:
    """Candles of OANDA instruments (``EUR_USD``) at one granularity, rate limited and retried.

    ``base_url`` replaces OANDA's REST host (a local test server speaking the v20 API).
    ``timeout_s`` bounds each socket read, ``deadline_s`` a whole request; ``retry`` bounds the
    retries of one request by the backoff time they may take.
    """

    resumable = True

    def __init__(
        self,
        *,
        token: str | None,
        environment: str = "practice",
        interval: str = "5m",
        price: str = "M",
        max_requests_per_second: float = 2.0,
        base_url: str | None = None,
        timeout_s: float = 10.0,
        deadline_s: float = DEFAULT_DEADLINE_S,
        retry: RetryPolicy | None = None,
        max_candles: int = MAX_CANDLES,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if environment not in ENVIRONMENTS:
            raise ValueError(
                f"OANDA environment must be one of {ENVIRONMENTS}, got {environment!r}"
            )
        if price not in PRICE_FIELDS:
            raise ValueError(f"OANDA price must be one of {sorted(PRICE_FIELDS)}, got {price!r}")
        if not 0 < max_candles <= MAX_CANDLES:
            raise ValueError(f"max_candles must be in 1..{MAX_CANDLES}, got {max_candles}")
        self.name = f"oanda:{environment}"
        self.interval = interval
        self.granularity = granularity(interval)
        self.environment = environment
        self.price = price
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self.max_candles = max_candles
        self._token = token
        self._api: Any = None
        self._runner = RequestRunner(
            venue=f"OANDA ({environment})",
            limiter=RateLimiter(max_requests_per_second, sleep=sleep),
            policy=retry or RetryPolicy(),
            classify=self._classify,
            sleep=sleep,
            rng=rng or random.Random(),
        )

    def __repr__(self) -> str:  # the token must never be printed
        return f"OandaSource(environment={self.environment!r}, interval={self.interval!r})"

    def _client(self) -> Any:
        if self._api is None:
            import oandapyV20
            from oandapyV20 import oandapyV20 as v20_module

            if not self._token:
                raise PermanentSourceError(
                    "no OANDA access token: set the OANDA_API_TOKEN environment variable"
                )
            environment = self.environment
            if self.base_url:
                # oandapyV20 takes its host from this table; a custom entry (keyed by the URL,
                # so the built-in practice/live hosts stay untouched) points the client elsewhere.
                environment = f"custom:{self.base_url}"
                url = self.base_url.rstrip("/")
                v20_module.TRADING_ENVIRONMENTS[environment] = {"api": url, "stream": url}
            api = oandapyV20.API(
                access_token=self._token,
                environment=environment,
                request_params={"timeout": self.timeout_s},
            )
            hints = {
                code: f"OANDA rejected the access token (HTTP {code}): check OANDA_API_TOKEN "
                f"and that it belongs to the {self.environment} environment"
                for code in (401, 403)
            }
            price = self.price
            mount_checked(
                api.client,
                ReplyRules(
                    venue=f"OANDA ({self.environment})",
                    deadline_s=self.deadline_s,
                    check_body=lambda path, body: v20_candles_problem(path, body, price),
                    hints=hints,
                    secrets=(self._token,),
                ),
            )
            self._api = api
        return self._api

    def _classify(self, exc: BaseException) -> Transient | None:
        # HTTP statuses are classified by the adapter (ffe_dagster.sources.http); what reaches
        # here is requests' socket-level failures.
        if isinstance(exc, requests.Timeout):
            return Transient("timeout")
        if isinstance(exc, requests.ConnectionError | requests.exceptions.ChunkedEncodingError):
            return Transient("network error")  # refused, reset, or a body cut off mid-transfer
        return None

    def fetch_pages(
        self,
        instrument: Instrument,
        start: datetime,
        end: datetime,
        *,
        now: datetime,
        stats: FetchStats,
    ) -> Iterator[Page]:
        """Complete candles of ``instrument.symbol`` over ``[start, min(end, now))``."""
        from oandapyV20.endpoints.instruments import InstrumentsCandles

        api = self._client()
        interval = interval_to_timedelta(self.interval)

        def request_page(a: datetime, b: datetime) -> pl.DataFrame:
            params: dict[str, str | int] = {
                "granularity": self.granularity,
                "price": self.price,
                "from": _rfc3339(a),
                # Daily (and H4...) candles on the UTC grid, not 17:00 New York: bars must lie
                # on the interval's epoch-aligned grid to pass validation.
                "alignmentTimezone": "UTC",
                "dailyAlignment": 0,
            }
            if b >= now - timedelta(minutes=1):
                # OANDA rejects a 'to' in the future, and the venue's clock may run behind
                # ours: the newest window asks for a count from 'from' instead.
                params["count"] = min(self.max_candles, -(-(b - a) // interval))
            else:
                params["to"] = _rfc3339(b)
            endpoint = InstrumentsCandles(instrument=instrument.symbol, params=params)
            response = self._runner.run(
                lambda: api.request(endpoint),
                stats,
                f"{instrument.symbol} candles from {a:%F %H:%M} UTC",
            )
            bars = parse_candles(response, self.price, stats)
            return clean_page(bars, a, b, interval=interval, now=now, stats=stats)

        yield from paginate(
            request_page,
            start,
            end,
            interval=interval,
            page_bars=self.max_candles,
            now=now,
            schedule=MarketSchedule.for_market(instrument.market),
            stats=stats,
        )
