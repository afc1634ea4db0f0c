"""The ccxt source with the real ccxt client against a local Coinbase Exchange server."""

import itertools
import json
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from ffe_dagster.core.data.bars import Instrument, MarketKind
from ffe_dagster.sources.base import (
    PermanentSourceError,
    RetriesExhaustedError,
    RetryPolicy,
    fetch_all,
)
from ffe_dagster.sources.ccxt_source import CcxtSource
from tests.fakes.harness import FAST, SLACK, between, coinbase, real_bars, utc
from tests.fakes.venues import FakeCoinbaseExchange, Fault

RECORDED = Path(__file__).parent / "fakes" / "recorded"
BTC = Instrument("BTC_USDT", "BTC/USDT", MarketKind.CRYPTO, source="ccxt")
REAL = real_bars("BTC_USDT_5m")
NOW = utc(2023, 3, 31)


def source(url: str, **options: object) -> CcxtSource:
    settings: dict[str, object] = {
        "base_url": url,
        "max_requests_per_second": FAST["max_requests_per_second"],
        "timeout_s": FAST["timeout_s"],
        "deadline_s": FAST["deadline_s"],
        "retry": RetryPolicy(
            outage_budget_s=FAST["outage_budget_s"], base_delay_s=FAST["backoff_s"]
        ),
        **options,
    }
    return CcxtSource(**settings)  # type: ignore[arg-type]


def test_local_server_answers_in_the_recorded_coinbase_format() -> None:
    recorded = json.loads((RECORDED / "ccxt_coinbaseexchange_fetchOHLCV.json").read_text())
    entry = recorded["methods"]["fetchOHLCV"][0]
    t, low, high, open_, close, volume = entry["httpResponse"][0]
    bar = pl.DataFrame(
        {
            "ts": [utc(2024, 3, 13, 11)],
            "open": [open_],
            "high": [high],
            "low": [low],
            "close": [close],
            "volume": [volume],
        }
    )
    assert int(bar["ts"].dt.epoch("s")[0]) == t
    with FakeCoinbaseExchange(
        {"BTC-USDT": bar}, now=utc(2024, 3, 13, 12), interval=timedelta(hours=1)
    ) as venue:
        with urllib.request.urlopen(f"{venue.url}/products/BTC-USDT/candles?granularity=3600") as r:
            assert json.loads(r.read()) == entry["httpResponse"]
        client = source(venue.url, interval="1h")._client()
        assert client.fetch_ohlcv(*entry["input"]) == entry["parsedResponse"]


def test_backfill_pages_cover_the_range_exactly() -> None:
    start, end = utc(2023, 3, 1), utc(2023, 3, 4, 6)
    with coinbase(NOW) as venue:
        bars, stats = fetch_all(source(venue.url), BTC, start, end, now=NOW)

    assert bars.equals(between(REAL, start, end))
    pages = -(-bars.height // 300)
    assert stats.requests == 2 + pages  # /currencies and /products, then the candle pages
    assert venue.candle_requests == pages and stats.retries == 0
    assert all(s.status == 200 and s.candles <= 300 for s in venue.served)
    starts = [s.params["start"] for s in venue.served]
    assert starts == sorted(starts)


def test_requests_are_spaced_by_the_rate_limit() -> None:
    with coinbase(NOW) as venue:
        fetch_all(
            source(venue.url, max_requests_per_second=20),
            BTC,
            utc(2023, 3, 1),
            utc(2023, 3, 6),
            now=NOW,
        )
    arrivals = [s.at for s in venue.served]
    assert len(arrivals) == 5
    # 20 requests/s: 50 ms apart. The server stamps a request when it reads it, so one gap can be
    # a few ms short when the previous request reached it late (seen at 44.7 ms under parallel
    # tests); the span of all gaps is what the venue's limit sees, and unspaced requests would
    # arrive about a millisecond apart.
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert arrivals[-1] - arrivals[0] >= 4 * 0.05 - 0.01
    assert min(gaps) >= 0.035


def test_retry_after_is_honoured_and_counted() -> None:
    with coinbase(NOW) as venue:
        venue.inject(Fault("rate_limit", retry_after="1"), Fault("timeout", delay_s=1.0))
        started = time.monotonic()
        bars, stats = fetch_all(source(venue.url), BTC, utc(2023, 3, 1), utc(2023, 3, 2), now=NOW)
        elapsed = time.monotonic() - started

    assert bars.equals(between(REAL, utc(2023, 3, 1), utc(2023, 3, 2)))
    assert stats.retry_reasons == {"429 rate limited": 1, "timeout": 1}
    assert stats.backoff_s >= 1.0 and elapsed >= 1.0 + FAST["timeout_s"]


def test_a_transient_error_that_persists_ends_with_a_clear_error() -> None:
    policy = RetryPolicy(outage_budget_s=0.3, base_delay_s=0.01, max_delay_s=0.05)
    with coinbase(NOW) as venue:
        venue.inject(Fault("outage", duration_s=30))
        started = time.monotonic()
        with pytest.raises(RetriesExhaustedError) as error:
            fetch_all(
                source(venue.url, retry=policy), BTC, utc(2023, 3, 1), utc(2023, 3, 2), now=NOW
            )
        elapsed = time.monotonic() - started
    message = str(error.value)
    assert "BTC/USDT candles from 2023-03-01 00:00 UTC still failing after" in message
    assert "and 0.3 s of backoff (the 0.3 s outage budget spent; HTTP 503)" in message
    assert "GET /products/BTC-USDT/candles answered HTTP 503: Service Unavailable" in message
    assert elapsed >= 0.3
    # 0.3 s of waits of at most 0.05 s: at least 6 retries, more than a count of 6 attempts
    assert venue.candle_requests >= 7


@pytest.mark.parametrize(
    ("fault", "status", "text"),
    [
        ("unauthorized", 401, "Unauthorized."),
        ("forbidden", 403, "Forbidden"),
        ("bad_request", 400, "Invalid request"),
    ],
)
def test_4xx_is_permanent_not_retried_and_says_what_the_venue_said(
    fault: str, status: int, text: str
) -> None:
    with coinbase(NOW) as venue:
        venue.inject(Fault(fault))  # type: ignore[arg-type]
        with pytest.raises(PermanentSourceError) as error:
            fetch_all(source(venue.url), BTC, utc(2023, 3, 1), utc(2023, 3, 2), now=NOW)
        assert venue.candle_requests == 1
    assert f"refused the request with HTTP {status}: {text}" in str(error.value)
    assert "BTC/USDT candles from 2023-03-01" in str(error.value)


def test_unknown_symbol_and_exchange_are_permanent() -> None:
    doge = Instrument("DOGE_USDT", "DOGE/USDT", MarketKind.CRYPTO, source="ccxt")
    with coinbase(NOW) as venue:
        with pytest.raises(PermanentSourceError, match="has no market 'DOGE/USDT'"):
            fetch_all(source(venue.url), doge, utc(2023, 3, 1), utc(2023, 3, 2), now=NOW)
        assert venue.candle_requests == 0
    with pytest.raises(PermanentSourceError, match="unknown ccxt exchange id"):
        fetch_all(source("http://127.0.0.1:9", exchange_id="nope"), BTC, NOW, NOW, now=NOW)
    with pytest.raises(PermanentSourceError, match="has no 7m candles"):
        fetch_all(source("http://127.0.0.1:9", interval="7m"), BTC, NOW, NOW, now=NOW)


def test_open_candle_and_out_of_range_rows_are_dropped() -> None:
    now = utc(2023, 3, 1, 1, 2)  # the 01:00 candle is forming
    with coinbase(now) as venue:
        bars, stats = fetch_all(source(venue.url), BTC, utc(2023, 3, 1), utc(2023, 3, 2), now=now)
    assert (
        bars["ts"].to_list() == between(REAL, utc(2023, 3, 1), utc(2023, 3, 1, 1))["ts"].to_list()
    )
    assert stats.unclosed_dropped == 1


@pytest.mark.parametrize("fault", ["trickle", "trickle_headers"])
def test_a_trickling_answer_is_cut_off_at_the_deadline_and_asked_again(fault: str) -> None:
    # one byte every 50 ms: each read is far inside the 1 s read timeout, but the whole answer
    # would take minutes; the 2 s deadline (headers included) cuts it off.
    with coinbase(NOW) as venue:
        venue.inject(Fault(fault, delay_s=0.05))  # type: ignore[arg-type]
        started = time.monotonic()
        bars, stats = fetch_all(
            source(venue.url, **SLACK), BTC, utc(2023, 3, 1), utc(2023, 3, 2), now=NOW
        )
        elapsed = time.monotonic() - started
    assert bars.equals(between(REAL, utc(2023, 3, 1), utc(2023, 3, 2)))
    assert stats.retry_reasons == {"deadline": 1}
    assert elapsed >= SLACK["deadline_s"]
