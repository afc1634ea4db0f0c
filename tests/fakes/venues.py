"""Local HTTP servers that speak the real venue APIs, serving real bars, with faults on demand.

``FakeCoinbaseExchange`` is Coinbase's Exchange API as ccxt's ``coinbaseexchange`` uses it:
``GET /currencies`` and ``GET /products`` (what ``load_markets()`` asks first) and
``GET /products/{product_id}/candles?granularity=&start=&end=`` answering rows
``[time, low, high, open, close, volume]``, newest first, at most 300 (a wider range is a 400,
as on the real API). ``FakeOanda`` is OANDA's v20 ``GET /v3/instruments/{instrument}/candles``
(granularity, price, from, to, count; at most 5000 candles; a bearer token is required;
prices are strings, times RFC 3339 with nanoseconds, candles oldest first, ``complete: false``
for the candle still forming).

Both serve only the bars they are given (real bars from ``ffe_dagster/data/samples``) and only
those that have opened by the server's ``now``: the candle containing ``now`` is served, as the
real venues do, and a client must not store it. ``inject`` queues faults; each candle request
takes the next one: 429 (with or without Retry-After), 500, 408, an outage (503 to every
request for ``duration_s``), a timeout (the answer comes late), a body (or its status line and
headers too) trickled one byte at a time, a body cut off mid-transfer, a 200 whose body is an
HTML proxy page, truncated JSON or another shape, an empty page, a short page, a hole inside
the page, duplicated or shuffled candles, a bar off the interval grid or a whole page shifted
off it, a bad price (high < low, negative, NaN), a 401, a 403 and a 400.
``inject_on("products" | "currencies", ...)`` queues faults for Coinbase's market-list
endpoints instead.
"""

import json
import random
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Self

import numpy as np
import polars as pl

from tests.fakes.wire import (
    ARRIVAL,
    HTML_PAGE,
    STATUS_FAULTS,
    Body,
    Fault,
    FaultKind,
    Late,
    Served,
    Server,
)

__all__ = ["HTML_PAGE", "Body", "FakeCoinbaseExchange", "FakeOanda", "Fault", "FaultKind", "Served"]


@dataclass
class _Series:
    ts: np.ndarray  # int64 seconds, sorted
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    @classmethod
    def of(cls, bars: pl.DataFrame) -> "_Series":
        return cls(
            ts=bars["ts"].dt.epoch("s").to_numpy(),
            **{c: bars[c].to_numpy() for c in ("open", "high", "low", "close", "volume")},
        )

    def span(self, first_s: int, last_s: int) -> tuple[int, int]:
        """Index range of bars with ``first_s <= ts <= last_s``."""
        lo = int(np.searchsorted(self.ts, first_s, side="left"))
        hi = int(np.searchsorted(self.ts, last_s, side="right"))
        return lo, hi


def _iso(value: str) -> datetime:
    text = value.replace("Z", "+00:00")
    if "." in text:  # RFC 3339 with up to nanoseconds: Python keeps microseconds
        head, tail = text.split(".", 1)
        digits = "".join(ch for ch in tail if ch.isdigit())
        zone = tail[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class _FakeVenue:
    bars: Mapping[str, pl.DataFrame]
    now: datetime
    interval: timedelta
    faults: deque[Fault] = field(default_factory=deque)
    served: list[Served] = field(default_factory=list)
    corrupted: list[datetime] = field(default_factory=list)
    seed: int = 7

    def __post_init__(self) -> None:
        self._series = {name: _Series.of(frame) for name, frame in self.bars.items()}
        self._lock = threading.Lock()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._rng = random.Random(self.seed)
        self._outage_until = 0.0
        self.endpoint_faults: dict[str, deque[Fault]] = {}

    # -- life cycle -------------------------------------------------------------------------
    def __enter__(self) -> Self:
        self._server = Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def inject(self, *faults: Fault) -> None:
        """Queue faults; each following candle request takes the next one."""
        with self._lock:
            self.faults.extend(faults)

    def inject_on(self, endpoint: str, *faults: Fault) -> None:
        """Queue faults for another endpoint (``products``, ``currencies``)."""
        with self._lock:
            self.endpoint_faults.setdefault(endpoint, deque()).extend(faults)

    def clear(self) -> None:
        """The fault clears: queued faults dropped, a running outage over."""
        with self._lock:
            self.faults.clear()
            self.endpoint_faults.clear()
            self._outage_until = 0.0

    @property
    def candle_requests(self) -> int:
        """How many candle requests were answered (faulty ones included)."""
        return len(self.served)

    # -- shared machinery -------------------------------------------------------------------
    def answer(
        self, path: str, params: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        raise NotImplementedError

    def _next_fault(self, endpoint: str = "candles") -> Fault | None:
        with self._lock:
            if endpoint == "candles" and time.monotonic() < self._outage_until:
                return Fault("outage")
            queue = self.faults if endpoint == "candles" else self.endpoint_faults.get(endpoint)
            fault = queue.popleft() if queue else None
            if fault is not None and fault.kind == "outage":
                self._outage_until = time.monotonic() + fault.duration_s
        return None if fault is None or fault.kind == "ok" else fault

    def _record(
        self, path: str, params: dict[str, str], status: int, fault: Fault | None, n: int
    ) -> None:
        with self._lock:
            kind = fault.kind if fault else None
            self.served.append(Served(path, params, status, kind, n, ARRIVAL.at))

    def _error_for(
        self, fault: Fault | None, path: str, params: dict[str, str]
    ) -> tuple[int, dict[str, str]] | None:
        if fault is None:
            return None
        if fault.kind == "rate_limit":
            return 429, ({"Retry-After": fault.retry_after} if fault.retry_after else {})
        if fault.kind in STATUS_FAULTS:
            return STATUS_FAULTS[fault.kind], {}
        if fault.kind == "timeout":
            self._record(path, params, 504, fault, 0)  # answered only after the client gave up
            raise Late(fault.delay_s)
        return None

    def _rows(self, series: _Series, lo: int, hi: int) -> list[list[Any]]:
        return [
            [
                int(series.ts[i]),
                float(series.open[i]),
                float(series.high[i]),
                float(series.low[i]),
                float(series.close[i]),
                None if np.isnan(series.volume[i]) else float(series.volume[i]),
            ]
            for i in range(lo, hi)
        ]

    def _apply_page_fault(self, rows: list[list[Any]], fault: Fault | None) -> list[list[Any]]:
        """``rows`` ascending ``[t, o, h, l, c, v]``; returns them altered by the fault."""
        if fault is None or not rows:
            return rows
        if fault.kind == "empty":
            return []
        if fault.kind == "hole":
            middle = len(rows) // 2 - fault.missing // 2
            return [*rows[:middle], *rows[middle + fault.missing :]]
        if fault.kind in ("off_grid_bar", "shifted_page"):
            lo = len(rows) // 2 if fault.kind == "off_grid_bar" else 0
            hi = lo + 1 if fault.kind == "off_grid_bar" else len(rows)
            shifted = [[r[0] + 180, *r[1:]] for r in rows[lo:hi]]  # 3 minutes late
            self.corrupted.extend(datetime.fromtimestamp(r[0], UTC) for r in shifted)
            return [*rows[:lo], *shifted, *rows[hi:]]
        if fault.kind == "duplicates":
            return sorted(rows + rows[:: max(1, len(rows) // 10)], key=lambda r: r[0])
        if fault.kind == "out_of_order":
            shuffled = list(rows)
            self._rng.shuffle(shuffled)
            return shuffled
        if fault.kind in ("high_below_low", "negative_price", "nan_price"):
            row = list(rows[len(rows) // 2])
            if fault.kind == "high_below_low":
                row[2], row[3] = row[3], row[2]
                if row[2] == row[3]:
                    row[2] = row[3] * 0.99
            elif fault.kind == "negative_price":
                row[3] = -row[3]
            else:
                row[4] = "NaN"
            self.corrupted.append(datetime.fromtimestamp(row[0], UTC))
            return [*rows[: len(rows) // 2], row, *rows[len(rows) // 2 + 1 :]]
        return rows

    def _body_fault(self, fault: Fault | None, body: Any, wrong: Any) -> Any:
        """The reply body as the fault garbles or delays it (``wrong``: another JSON shape)."""
        if fault is None:
            return body
        payload = json.dumps(body).encode()
        if fault.kind == "html":
            return Body(HTML_PAGE, content_type="text/html")
        if fault.kind == "truncated":
            return Body(payload[: max(1, len(payload) // 2)])
        if fault.kind == "wrong_shape":
            return wrong
        if fault.kind == "trickle":
            return Body(payload, trickle_s=fault.delay_s)
        if fault.kind == "trickle_headers":
            return Body(payload, trickle_s=fault.delay_s, trickle_headers=True)
        if fault.kind == "cut_body":
            return Body(payload, cut=True)
        return body


class FakeCoinbaseExchange(_FakeVenue):
    """Coinbase Exchange (``coinbaseexchange``): products keyed ``BTC-USDT``."""

    MAX_CANDLES = 300

    def answer(
        self, path: str, params: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        if path in ("/currencies", "/products"):
            return self._market_list(path)
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "products" and parts[2] == "candles":
            return self._candles(parts[1], params)
        return 404, {"message": "NotFound"}, {}

    _MESSAGES: ClassVar[dict[int, str]] = {
        429: "Public rate limit exceeded",
        500: "Internal server error",
        503: "Service Unavailable",
        401: "Unauthorized.",
        403: "Forbidden",
        400: "Invalid request",
        408: "Request timeout",
    }

    def _market_list(self, path: str) -> tuple[int, Any, dict[str, str]]:
        fault = self._next_fault(path.strip("/"))
        error = self._error_for(fault, path, {})
        if error is not None:
            status, headers = error
            return status, {"message": self._MESSAGES[status]}, headers
        body = self._currencies() if path == "/currencies" else self._products()
        wrong = [{"name": entry["id"]} for entry in body]  # ids under another key
        return 200, self._body_fault(fault, body, wrong), {}

    def _currencies(self) -> list[dict[str, Any]]:
        codes = sorted({c for product in self.bars for c in product.split("-")})
        return [
            {
                "id": code,
                "name": code,
                "min_size": "0.00000001",
                "status": "online",
                "message": "",
                "max_precision": "0.00000001",
                "convertible_to": [],
                "details": {"type": "crypto", "network_confirmations": 0},
                "supported_networks": [],
            }
            for code in codes
        ]

    def _products(self) -> list[dict[str, Any]]:
        return [
            {
                "id": product,
                "base_currency": product.split("-")[0],
                "quote_currency": product.split("-")[1],
                "quote_increment": "0.01",
                "base_increment": "0.00000001",
                "display_name": product.replace("-", "/"),
                "min_market_funds": "1",
                "margin_enabled": False,
                "post_only": False,
                "limit_only": False,
                "cancel_only": False,
                "status": "online",
                "status_message": "",
                "trading_disabled": False,
                "fx_stablecoin": False,
                "max_slippage_percentage": "0.02000000",
                "auction_mode": False,
            }
            for product in self.bars
        ]

    def _candles(self, product: str, params: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        fault = self._next_fault()
        path = f"/products/{product}/candles"
        error = self._error_for(fault, path, params)
        if error is not None:
            status, headers = error
            self._record(path, params, status, fault, 0)
            return status, {"message": self._MESSAGES[status]}, headers
        if product not in self._series:
            self._record(path, params, 404, fault, 0)
            return 404, {"message": "NotFound"}, {}
        granularity = int(params.get("granularity", "0") or 0)
        if granularity != int(self.interval.total_seconds()):
            self._record(path, params, 400, fault, 0)
            return 400, {"message": "Unsupported granularity"}, {}
        now_s = int(self.now.timestamp())
        end_s = int(_iso(params["end"]).timestamp()) if "end" in params else now_s
        start_s = (
            int(_iso(params["start"]).timestamp())
            if "start" in params
            else end_s - (self.MAX_CANDLES - 1) * granularity
        )
        if (end_s - start_s) // granularity + 1 > self.MAX_CANDLES:
            self._record(path, params, 400, fault, 0)
            return (
                400,
                {
                    "message": "granularity too small for the requested time range. Count of "
                    "aggregations requested exceeds 300"
                },
                {},
            )
        series = self._series[product]
        lo, hi = series.span(start_s, min(end_s, now_s))
        ascending = self._apply_page_fault(self._rows(series, lo, hi), fault)
        # Exchange rows are [time, low, high, open, close, volume], newest first.
        rows = [[t, low, high, o, c, v] for t, o, high, low, c, v in ascending]
        if fault is None or fault.kind != "out_of_order":
            rows.sort(key=lambda r: r[0], reverse=True)
        if fault is not None and fault.kind == "short_page":
            rows = rows[: fault.keep]  # the answer stops early: the oldest candles are missing
        self._record(path, params, 200, fault, len(rows))
        keys = ("time", "low", "high", "open", "close", "volume")
        wrong = [dict(zip(keys, r, strict=True)) for r in rows]
        return 200, self._body_fault(fault, rows, wrong), {}


class FakeOanda(_FakeVenue):
    """OANDA v20 instrument candles: instruments keyed ``GBP_USD``; ``token`` is required.

    It holds one real price series per instrument and answers it under whichever component was
    asked (``mid``, ``bid`` or ``ask``): the tests check the request and the parsing, not spreads.
    """

    MAX_CANDLES = 5000
    token: str = "test-token-not-a-secret"
    _GRANULARITY: ClassVar[dict[int, str]] = {300: "M5", 900: "M15", 3600: "H1", 86400: "D"}

    def answer(
        self, path: str, params: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        parts = path.strip("/").split("/")
        if len(parts) != 4 or parts[:2] != ["v3", "instruments"] or parts[3] != "candles":
            return 404, {"errorMessage": "The requested resource does not exist"}, {}
        if headers.get("Authorization") != f"Bearer {self.token}":
            self._record(path, params, 401, None, 0)
            return 401, {"errorMessage": "Insufficient authorization to perform request."}, {}
        return self._candles(parts[2], path, params)

    def _refusal(self, instrument: str, params: dict[str, str]) -> str | None:
        """OANDA's 400 message for a request it refuses, or None."""
        if instrument not in self._series:
            return "Invalid value specified for 'instrument'"
        if params.get("granularity") != self._GRANULARITY.get(int(self.interval.total_seconds())):
            return "Invalid value specified for 'granularity'"
        if "to" in params and "count" in params and "from" in params:
            return "Cannot specify 'count' with both 'from' and 'to'"
        if "to" in params and _iso(params["to"]) > self.now:
            return "Invalid value specified for 'to'. Time is in future"
        if int(params.get("count", "500")) > self.MAX_CANDLES:
            return "Maximum value for 'count' exceeded"
        return None

    def _candles(
        self, instrument: str, path: str, params: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        fault = self._next_fault()
        error = self._error_for(fault, path, params)
        if error is not None:
            status, headers = error
            message = {
                429: "Rate limit violation. Allowed rate: 100 requests per second",
                500: "Internal server error",
                503: "Service unavailable",
                401: "Insufficient authorization to perform request.",
                403: "The provided request was forbidden.",
                400: "Invalid value specified for 'from'",
                408: "Request timed out",
            }[status]
            self._record(path, params, status, fault, 0)
            return status, {"errorMessage": message}, headers
        refused = self._refusal(instrument, params)
        if refused is not None:
            self._record(path, params, 400, fault, 0)
            return 400, {"errorMessage": refused}, {}
        step = int(self.interval.total_seconds())
        price = params.get("price", "M")
        now_s = int(self.now.timestamp())
        series = self._series[instrument]
        count = int(params.get("count", "500"))
        newest = series.span(0, now_s)[1]  # candles that have opened by now
        if "from" not in params:  # the newest ``count`` candles
            lo, hi = max(0, newest - count), newest
        elif "to" in params:
            start_s = int(_iso(params["from"]).timestamp())
            end_s = int(_iso(params["to"]).timestamp())
            if (end_s - start_s) // step > self.MAX_CANDLES:
                self._record(path, params, 400, fault, 0)
                return 400, {"errorMessage": "Maximum value for 'count' exceeded"}, {}
            lo, hi = series.span(start_s, end_s - 1)  # 'to' is exclusive
        else:
            lo = series.span(int(_iso(params["from"]).timestamp()), now_s)[0]
            hi = min(lo + count, newest)
        rows = self._apply_page_fault(self._rows(series, lo, hi), fault)
        if fault is not None and fault.kind == "short_page":
            rows = rows[: fault.keep]  # oldest first: the newest candles are missing
        field_name = {"M": "mid", "B": "bid", "A": "ask"}[price]
        candles = []
        for t, o, high, low, c, v in rows:
            if v is None:
                raise AssertionError("OANDA always reports tick volume: serve bars that have it")
            candles.append(
                {
                    "complete": t + step <= now_s,
                    "volume": int(v),
                    "time": datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.000000000Z"),
                    field_name: {"o": str(o), "h": str(high), "l": str(low), "c": str(c)},
                }
            )
        self._record(path, params, 200, fault, len(candles))
        body = {"instrument": instrument, "granularity": params["granularity"], "candles": candles}
        wrong = {**body, "candles": [{k: c[k] for k in ("complete", "time")} for c in candles]}
        return 200, self._body_fault(fault, body, wrong), {}
