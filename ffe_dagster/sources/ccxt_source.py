"""Crypto bars from any ccxt exchange (default ``coinbaseexchange``), public candles, no key.

``coinbaseexchange`` is Coinbase's Exchange API (``GET /products/{id}/candles``, at most 300
candles per answer, newest first). ccxt's other Coinbase id, ``coinbase``, is the Advanced Trade
API; either works here, the Exchange API is the default because its public candles need no
account. Pages are fetched with ``fetch_ohlcv(symbol, timeframe, since, limit)`` over fixed
windows; the request rate, retries and short pages are handled in ``ffe_dagster.sources.base``,
the deadline and the reply checks in ``ffe_dagster.sources.http``. ccxt parses whatever body it
gets (an HTML page becomes rows without timestamps that its ``since`` filter drops, so
``fetch_ohlcv`` would return ``[]``): every reply is checked against Coinbase Exchange's schema
before ccxt sees it.
"""

import math
import random
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import polars as pl

from ffe_dagster.core.data.bars import (
    OHLCV_SCHEMA,
    Instrument,
    MarketSchedule,
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

DEFAULT_EXCHANGE = "coinbaseexchange"
_CANDLE_FIELDS = 6  # [time, low, high, open, close, volume]


def _is_number(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float) or value is None:
        return True
    try:
        float(str(value))
    except ValueError:
        return False
    return True


def _records_lacking(body: Any, what: str, keys: tuple[str, ...]) -> str | None:
    if not isinstance(body, list):
        return f"{what} must be a JSON list, got {type(body).__name__}"
    for i, item in enumerate(body):
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in keys):
            return f"{what} entry {i} lacks one of {list(keys)} (text)"
    return None


def coinbase_exchange_problem(path: str, body: Any) -> str | None:
    """What keeps ``body`` (parsed JSON) from being Coinbase Exchange's answer to ``path``.

    ``/currencies`` and ``/products`` are lists of objects with text ids (ccxt splits
    ``base_currency``/``quote_currency``); candles are a list of
    ``[time, low, high, open, close, volume]`` rows with an integer ``time``. Prices may be
    numbers or numeric text (bad values are the validation suite's to quarantine).
    """
    parts = path.strip("/").split("/")
    if parts == ["currencies"]:
        return _records_lacking(body, "the currency list", ("id",))
    if parts == ["products"]:
        return _records_lacking(body, "the product list", ("id", "base_currency", "quote_currency"))
    if len(parts) == 3 and parts[0] == "products" and parts[2] == "candles":
        if not isinstance(body, list):
            return f"candles must be a JSON list of rows, got {type(body).__name__}"
        for i, row in enumerate(body):
            if not (
                isinstance(row, list)
                and len(row) == _CANDLE_FIELDS
                and isinstance(row[0], int)
                and not isinstance(row[0], bool)
                and all(_is_number(v) for v in row[1:])
            ):
                return f"candle row {i} is not [time, low, high, open, close, volume]: {row!r:.60}"
    return None


def _json_only(path: str, body: Any) -> str | None:
    # Other ccxt exchanges: their schemas are not known here; a reply must at least be JSON.
    return None


def _override_urls(urls: Any, base_url: str) -> Any:
    # ccxt keeps its endpoints under urls["api"], a string or a mapping of API group -> URL;
    # every group is pointed at base_url (a local test server, a proxy).
    if isinstance(urls, dict):
        return {key: _override_urls(value, base_url) for key, value in urls.items()}
    return base_url.rstrip("/")


def _to_frame(rows: list[list[Any]]) -> pl.DataFrame:
    frame = pl.DataFrame(
        rows,
        schema={"ms": pl.Int64, **{c: pl.Float64 for c in list(OHLCV_SCHEMA)[1:]}},
        orient="row",
        strict=False,
    )
    return frame.select(
        pl.from_epoch("ms", time_unit="ms")
        .dt.replace_time_zone("UTC")
        .cast(OHLCV_SCHEMA["ts"])
        .alias("ts"),
        *list(OHLCV_SCHEMA)[1:],
    )


class CcxtSource:
    """Bars of one ccxt exchange at one timeframe, rate limited and retried.

    ``base_url`` replaces the exchange's API URLs (tests point it at a local server that speaks
    the same API). ``page_bars`` is the most candles the exchange returns per request (300 on
    Coinbase; raise it for exchanges that allow more). ``timeout_s`` bounds each socket read,
    ``deadline_s`` a whole request (connect, headers and body); ``retry`` bounds the retries
    of one request by the backoff time they may take.
    """

    resumable = True

    def __init__(
        self,
        *,
        exchange_id: str = DEFAULT_EXCHANGE,
        interval: str = "5m",
        max_requests_per_second: float = 3.0,
        base_url: str | None = None,
        timeout_s: float = 10.0,
        deadline_s: float = DEFAULT_DEADLINE_S,
        retry: RetryPolicy | None = None,
        page_bars: int = 300,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        interval_to_timedelta(interval)
        self.name = f"ccxt:{exchange_id}"
        self.exchange_id = exchange_id
        self.interval = interval
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self.page_bars = page_bars
        self._exchange: Any = None
        self._runner = RequestRunner(
            venue=exchange_id,
            limiter=RateLimiter(max_requests_per_second, sleep=sleep),
            policy=retry or RetryPolicy(),
            classify=self._classify,
            sleep=sleep,
            rng=rng or random.Random(),
        )

    def _client(self) -> Any:
        if self._exchange is None:
            import ccxt  # imported on first use: it costs seconds and file-only runs skip it

            factory = getattr(ccxt, self.exchange_id, None)
            if not isinstance(factory, type):
                raise PermanentSourceError(
                    f"unknown ccxt exchange id {self.exchange_id!r} (see ccxt.exchanges)"
                )
            # ccxt's own throttle is off: our RateLimiter spaces every request, retries included.
            exchange = factory({"enableRateLimit": False, "timeout": int(self.timeout_s * 1000)})
            if self.base_url:
                exchange.urls["api"] = _override_urls(exchange.urls["api"], self.base_url)
            coinbase = self.exchange_id == DEFAULT_EXCHANGE
            check = coinbase_exchange_problem if coinbase else _json_only
            hint = "public candles need no API key: check the exchange id and any credentials"
            mount_checked(
                exchange.session,
                ReplyRules(
                    venue=self.exchange_id,
                    deadline_s=self.deadline_s,
                    check_body=check,
                    hints={401: hint, 403: hint},
                ),
            )
            if self.interval not in exchange.timeframes:
                raise PermanentSourceError(
                    f"{self.exchange_id} has no {self.interval} candles; it offers "
                    f"{sorted(exchange.timeframes)}"
                )
            self._exchange = exchange
        return self._exchange

    def _classify(self, exc: BaseException) -> Transient | None:
        # HTTP statuses are classified by the adapter (ffe_dagster.sources.http) before ccxt
        # maps them; what reaches here is ccxt's mapping of socket-level failures.
        import ccxt

        if isinstance(exc, ccxt.RequestTimeout):
            return Transient("timeout")
        if isinstance(exc, ccxt.NetworkError):
            return Transient("network error")
        if isinstance(exc, ccxt.BaseError):
            raise PermanentSourceError(f"{self.exchange_id} refused the request: {exc}") from exc
        return None

    def _market_id(self, symbol: str, stats: FetchStats) -> str:
        exchange = self._client()
        if not exchange.markets:
            # load_markets() asks for the currencies first when the exchange lists them
            # (coinbaseexchange does): two requests, so two slots of the rate limit.
            cost = 2 if exchange.has.get("fetchCurrencies") is True else 1
            for _ in range(cost - 1):
                stats.rate_wait_s += self._runner.limiter.acquire()
                stats.requests += 1
            self._runner.run(
                exchange.load_markets, stats, f"loading the market list (for {symbol})"
            )
        if symbol not in exchange.markets:
            raise PermanentSourceError(
                f"{self.exchange_id} has no market {symbol!r}; check the instrument's symbol "
                f"in the universe configuration (e.g. {sorted(exchange.markets)[:5]})"
            )
        return str(exchange.markets[symbol]["id"])

    def fetch_pages(
        self,
        instrument: Instrument,
        start: datetime,
        end: datetime,
        *,
        now: datetime,
        stats: FetchStats,
    ) -> Iterator[Page]:
        """Closed candles of ``instrument.symbol`` over ``[start, min(end, now))``."""
        exchange = self._client()
        self._market_id(instrument.symbol, stats)
        interval = interval_to_timedelta(self.interval)

        def request_page(a: datetime, b: datetime) -> pl.DataFrame:
            limit = math.ceil((b - a) / interval)
            since = int(a.timestamp() * 1000)
            rows = self._runner.run(
                lambda: exchange.fetch_ohlcv(instrument.symbol, self.interval, since, limit),
                stats,
                f"{instrument.symbol} candles from {a:%F %H:%M} UTC",
            )
            return clean_page(_to_frame(rows), a, b, interval=interval, now=now, stats=stats)

        yield from paginate(
            request_page,
            start,
            end,
            interval=interval,
            page_bars=self.page_bars,
            now=now,
            schedule=MarketSchedule.for_market(instrument.market),
            stats=stats,
        )
