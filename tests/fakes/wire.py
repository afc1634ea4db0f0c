"""The wire side of the local venues: the faults a test can inject, and the HTTP server that
sends each answer as the fault shapes it (JSON, a raw body, trickled, cut off, or late)."""

import json
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Protocol, cast
from urllib.parse import parse_qs, urlparse

FaultKind = Literal[
    "ok",  # no fault: lets a later fault hit a chosen request
    "rate_limit",
    "server_error",
    "timeout",
    "short_page",
    "duplicates",
    "out_of_order",
    "high_below_low",
    "negative_price",
    "nan_price",
    "unauthorized",
    "forbidden",
    "bad_request",
    "request_timeout",
    "outage",
    "trickle",
    "trickle_headers",
    "cut_body",
    "html",
    "truncated",
    "wrong_shape",
    "empty",
    "hole",
    "off_grid_bar",
    "shifted_page",
]
STATUS_FAULTS: dict[str, int] = {
    "rate_limit": 429,
    "server_error": 500,
    "unauthorized": 401,
    "forbidden": 403,
    "bad_request": 400,
    "request_timeout": 408,
    "outage": 503,
}
HTML_PAGE = (
    b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
    b"</h1></center><hr><center>nginx</center></body></html>"
)


@dataclass(frozen=True)
class Fault:
    """One injected fault: ``retry_after`` for 429 (None = header absent), ``keep`` candles of a
    short page, ``delay_s`` before a timed-out answer (or between trickled bytes),
    ``duration_s`` of an outage, ``missing`` candles of a hole."""

    kind: FaultKind
    retry_after: str | None = None
    keep: int = 50
    delay_s: float = 1.0
    duration_s: float = 1.0
    missing: int = 12


@dataclass(frozen=True)
class Body:
    """A reply body sent as is: ``trickle_s`` between bytes (of the status line and headers
    too with ``trickle_headers``), or ``cut`` after half of it."""

    payload: bytes
    content_type: str = "application/json"
    trickle_s: float = 0.0
    trickle_headers: bool = False
    cut: bool = False


@dataclass(frozen=True)
class Served:
    """One candle request as the server saw it (``at``: ``time.monotonic()`` on arrival)."""

    path: str
    params: Mapping[str, str]
    status: int
    fault: FaultKind | None
    candles: int
    at: float


class Venue(Protocol):
    """What the server asks of a venue: an answer per request."""

    def answer(
        self, path: str, params: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]: ...


# When the request being answered on this server thread was read (``Served.at``): stamped
# before the venue computes its answer, so the answer's own cost, which varies under load, is
# not in the gaps between two requests' stamps.
ARRIVAL = threading.local()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ARRIVAL.at = time.monotonic()
        url = urlparse(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        venue = cast(Server, self.server).venue
        try:
            status, body, headers = venue.answer(url.path, params, dict(self.headers))
        except Late as late:
            time.sleep(late.delay_s)
            status, body, headers = 504, {"message": "late"}, {}
        reply = body if isinstance(body, Body) else Body(json.dumps(body).encode())
        try:
            if reply.trickle_headers:
                head = (
                    f"HTTP/1.1 {status} OK\r\nContent-Type: {reply.content_type}\r\n"
                    f"Content-Length: {len(reply.payload)}\r\n\r\n"
                ).encode()
                self._trickle(head + reply.payload, reply.trickle_s)
                return
            self.send_response(status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self._write(reply)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (timeout, deadline): nothing to answer

    def _write(self, reply: Body) -> None:
        if reply.cut:
            self.wfile.write(reply.payload[: len(reply.payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)  # the transfer breaks off
        elif reply.trickle_s:
            self._trickle(reply.payload, reply.trickle_s)
        else:
            self.wfile.write(reply.payload)

    def _trickle(self, data: bytes, pause_s: float) -> None:
        for i in range(len(data)):
            self.wfile.write(data[i : i + 1])
            self.wfile.flush()
            time.sleep(pause_s)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, venue: Venue) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.venue = venue


class Late(Exception):
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
