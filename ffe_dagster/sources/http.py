"""The HTTP layer both venue clients share: a total deadline per request and a checked reply.

ccxt and oandapyV20 both send through a ``requests.Session``; ``mount_checked`` mounts
``CheckedAdapter`` on it, so every request of either client, whatever the client does with the
answer afterwards, is

- cut off at ``deadline_s`` from its start, connect, headers and the whole body included
  (``requests``' own ``timeout`` bounds each socket read, so a server trickling one byte a second
  holds it forever): a watchdog shuts the request's socket down at the deadline;
- classified on its HTTP status before the client sees it: 408, 429 and 5xx are transient
  (``TransientReply``), 401, 403 and every other 4xx permanent (``PermanentSourceError``), each
  with the status and the venue's own error text (ccxt maps 403 to ``ExchangeNotAvailable`` and
  oandapyV20 maps everything to ``V20Error``: neither mapping is relied on);
- checked against the venue's schema when it is a 2xx: a body that does not parse into it
  (an HTML proxy page, truncated JSON, another shape) is a ``MalformedReply``, never an empty page.

Messages carry the first bytes of the body with any configured secret (the OANDA token) masked;
request headers are never included.
"""

import json
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from ffe_dagster.sources.base import (
    MalformedReply,
    PermanentSourceError,
    Transient,
    TransientReply,
    parse_retry_after,
)

EXCERPT_BYTES = 120
# A body checker: (path, parsed JSON) -> what is wrong with it, or None when it fits the schema.
BodyCheck = Callable[[str, Any], str | None]


class DeadlineExceeded(TransientReply):
    """No complete answer within the request's total deadline."""


class _Watch:
    """One request's deadline: the socket it runs on and whether the deadline has passed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.expired = False

    def attach(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            if self.expired:
                self._shutdown()

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            self._shutdown()

    def _shutdown(self) -> None:
        # shutdown (not close) from the watchdog thread: the blocked read returns at once and
        # the owning thread closes the socket as usual.
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its owner: the request is over anyway


_current = threading.local()


class _WatchedHTTPConnection(HTTPConnection):
    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        # The request is sent and the headers not yet read: from here on the socket is known.
        watch: _Watch | None = getattr(_current, "watch", None)
        if watch is not None:
            watch.attach(self.sock)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        watch: _Watch | None = getattr(_current, "watch", None)
        if watch is not None:
            watch.attach(self.sock)
        return super().getresponse(*args, **kwargs)


# urllib3 types ConnectionCls as its connection Protocols, which its own classes match only
# through the ``Final`` constants they declare: the subclasses are the concrete classes.
class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection  # pyright: ignore[reportAssignmentType]


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection  # pyright: ignore[reportAssignmentType]


def excerpt(body: bytes, secrets: tuple[str, ...] = ()) -> str:
    """The first bytes of ``body`` as text, secrets masked."""
    text = body[:EXCERPT_BYTES].decode("utf-8", errors="replace")
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text + ("..." if len(body) > EXCERPT_BYTES else "")


def venue_text(body: bytes, secrets: tuple[str, ...] = ()) -> str:
    """What the venue said: its JSON error message when there is one, else the body's start."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return excerpt(body, secrets)
    if isinstance(parsed, dict):
        for key in ("message", "errorMessage", "error"):
            if isinstance(parsed.get(key), str) and parsed[key]:
                return excerpt(parsed[key].encode(), secrets)
    return excerpt(body, secrets)


@dataclass(frozen=True, slots=True)
class ReplyRules:
    """How to judge one venue's replies: its label, the total deadline per request, the body
    check of its 2xx answers, a hint per permanent status, and the secrets to mask."""

    venue: str
    deadline_s: float
    check_body: BodyCheck
    hints: Mapping[int, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()


def check_reply(
    rules: ReplyRules, endpoint: str, status: int, body: bytes, headers: Mapping[str, str]
) -> None:
    """Raise for a reply that is not a well-formed page: see the module docstring."""
    where = f"{rules.venue} {endpoint}"
    if status == 429 or status == 408 or status >= 500:
        reason = "429 rate limited" if status == 429 else f"HTTP {status}"
        retry_after = parse_retry_after(headers.get("Retry-After")) if status == 429 else None
        raise TransientReply(
            f"{where} answered HTTP {status}: {venue_text(body, rules.secrets)}",
            Transient(reason, retry_after),
        )
    if 400 <= status < 500:
        hint = rules.hints.get(status, "")
        raise PermanentSourceError(
            f"{where} refused the request with HTTP {status}: "
            f"{venue_text(body, rules.secrets)}" + (f" ({hint})" if hint else "")
        )
    if not 200 <= status < 300:
        return
    try:
        parsed = json.loads(body)
    except ValueError as exc:
        problem: str | None = f"not JSON ({exc})"
    else:
        problem = rules.check_body(endpoint.split(" ", 1)[-1], parsed)
    if problem is not None:
        raise MalformedReply(
            f"{where} answered HTTP {status} with a body that is not the venue's reply: "
            f"{problem}; it starts {excerpt(body, rules.secrets)!r}",
            Transient("malformed reply"),
        )


class CheckedAdapter(HTTPAdapter):
    """``requests``' adapter with a total deadline and the reply checks of ``ReplyRules``."""

    def __init__(self, rules: ReplyRules) -> None:
        self.rules = rules
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {  # pyright: ignore[reportAttributeAccessIssue]
            "http": _WatchedHTTPPool,
            "https": _WatchedHTTPSPool,
        }

    def send(  # pyright: ignore[reportIncompatibleMethodOverride]
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: dict[str, str] | None = None,
    ) -> requests.Response:
        deadline = self.rules.deadline_s
        endpoint = f"{request.method} {urlsplit(request.path_url).path}"  # the query: in `what`
        watch = _Watch()
        timer = threading.Timer(deadline, watch.expire)
        timer.daemon = True
        _current.watch = watch
        timer.start()
        try:
            response = super().send(
                request,
                stream=True,
                timeout=_bounded(timeout, deadline),
                verify=verify,
                cert=cert,
                proxies=proxies,
            )
            body = response.content  # read here, under the watchdog
        except Exception as exc:
            if not watch.expired:
                raise
            raise self._late(endpoint) from exc
        finally:
            timer.cancel()
            _current.watch = None
        if watch.expired:  # the watchdog fired as the body ended: it may be cut short
            response.close()
            raise self._late(endpoint)
        check_reply(self.rules, endpoint, response.status_code, body, response.headers)
        return response

    def _late(self, endpoint: str) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"{self.rules.venue} {endpoint}: no complete answer within the "
            f"{self.rules.deadline_s:g} s deadline",
            Transient("deadline"),
        )


def _bounded(timeout: Any, deadline: float) -> Any:
    # The client's per-read timeout, never longer than the whole request may take.
    if timeout is None:
        return deadline
    if isinstance(timeout, tuple):
        return tuple(deadline if t is None else min(float(t), deadline) for t in timeout)
    return min(float(timeout), deadline)


def mount_checked(session: requests.Session, rules: ReplyRules) -> None:
    """Send every request of ``session`` through a ``CheckedAdapter`` with ``rules``."""
    adapter = CheckedAdapter(rules)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
