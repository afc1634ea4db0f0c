"""The OANDA source with the real oandapyV20 client against a local v20 server."""

import json
import time
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from ffe_dagster.core.data.bars import Instrument, MarketKind
from ffe_dagster.sources.base import FetchStats, PermanentSourceError, RetryPolicy, fetch_all
from ffe_dagster.sources.oanda import OandaSource, granularity, parse_candles
from tests.fakes.harness import FAST, SLACK, between, oanda, real_bars, utc
from tests.fakes.venues import FakeOanda, Fault

RECORDED = Path(__file__).parent / "fakes" / "recorded"
GBP = Instrument("GBP_USD", "GBP_USD", MarketKind.FOREX, source="oanda")
REAL = real_bars("GBP_USD_1h")
NOW = utc(2024, 4, 30)


def source(url: str, token: str | None = FakeOanda.token, **options: object) -> OandaSource:
    settings: dict[str, object] = {
        "token": token,
        "interval": "1h",
        "base_url": url,
        "max_requests_per_second": FAST["max_requests_per_second"],
        "timeout_s": FAST["timeout_s"],
        "deadline_s": FAST["deadline_s"],
        "retry": RetryPolicy(
            outage_budget_s=FAST["outage_budget_s"], base_delay_s=FAST["backoff_s"]
        ),
        **options,
    }
    return OandaSource(**settings)  # type: ignore[arg-type]


def _recorded() -> dict:
    return json.loads((RECORDED / "oanda_v20_instruments_DE30_EUR_candles_M5.json").read_text())


def test_recorded_response_parses_to_bars() -> None:
    bars = parse_candles(_recorded()["response"], "M")
    assert bars["ts"].to_list() == [utc(2016, 10, 17, 19, 35 + 5 * i) for i in range(5)]
    assert bars.row(0) == (utc(2016, 10, 17, 19, 35), 10503.8, 10508.0, 10503.8, 10506.0, 132.0)
    assert bars["volume"].to_list() == [132.0, 162.0, 196.0, 153.0, 172.0]


def test_local_server_answers_in_the_recorded_v20_format() -> None:
    recorded = _recorded()
    bars = parse_candles(recorded["response"], "M")
    with FakeOanda(
        {"DE30_EUR": bars}, now=utc(2016, 10, 17, 20), interval=timedelta(minutes=5)
    ) as v:
        api = source(v.url, interval="5m")._client()
        from oandapyV20.endpoints.instruments import InstrumentsCandles

        answer = api.request(
            InstrumentsCandles(instrument="DE30_EUR", params=recorded["request"]["params"])
        )
    assert answer["candles"] == recorded["response"]["candles"]
    assert answer["granularity"] == "M5"


def test_pages_of_at_most_max_candles_cover_the_range() -> None:
    start, end = utc(2024, 3, 1), utc(2024, 3, 20)
    with oanda(NOW) as venue:
        bars, stats = fetch_all(source(venue.url, max_candles=100), GBP, start, end, now=NOW)
    assert bars.equals(between(REAL, start, end))
    assert stats.pages == -(-19 * 24 // 100)
    # In US summer time the market closes at 21:00 UTC on Fridays, an hour before the
    # schedule's 22:00: a page ending in that weekend asks once more for the 21:00 hour.
    assert venue.candle_requests == stats.requests == stats.pages + stats.refetches
    assert stats.refetches <= 1
    for served in venue.served:
        assert served.params["granularity"] == "H1" and served.params["price"] == "M"
        assert "count" not in served.params  # from/to windows in the past
        assert served.candles <= 100


def test_newest_window_asks_a_count_never_a_future_to() -> None:
    now = utc(2024, 3, 8, 12, 30)
    with oanda(now) as venue:
        bars, stats = fetch_all(source(venue.url), GBP, utc(2024, 3, 8), utc(2024, 3, 9), now=now)
    assert [s.params.get("count") for s in venue.served] == ["13"]
    assert "to" not in venue.served[0].params
    assert bars["ts"].max() == utc(2024, 3, 8, 11)  # 12:00 is not complete yet
    assert stats.incomplete_dropped == 1


def test_bid_prices_when_configured() -> None:
    with oanda(NOW) as venue:
        bars, _ = fetch_all(
            source(venue.url, price="B"), GBP, utc(2024, 3, 4), utc(2024, 3, 5), now=NOW
        )
    assert venue.served[0].params["price"] == "B"
    assert bars.height == 24


def test_wrong_token_unknown_instrument_and_missing_token_are_permanent() -> None:
    eur = Instrument("XYZ", "EUR_XYZ", MarketKind.FOREX, source="oanda")
    with oanda(NOW) as venue:
        with pytest.raises(
            PermanentSourceError, match="HTTP 401: Insufficient authorization"
        ) as error:
            fetch_all(source(venue.url, token="wrong-secret"), GBP, utc(2024, 3, 4), NOW, now=NOW)
        assert "wrong-secret" not in str(error.value)
        with pytest.raises(PermanentSourceError, match="Invalid value specified for 'instrument'"):
            fetch_all(source(venue.url), eur, utc(2024, 3, 4), NOW, now=NOW)
        with pytest.raises(PermanentSourceError, match="set the OANDA_API_TOKEN"):
            fetch_all(source(venue.url, token=None), GBP, utc(2024, 3, 4), NOW, now=NOW)
        assert venue.candle_requests == 2  # each permanent error once, never retried


def test_shuffled_and_duplicated_candles_are_put_right() -> None:
    with oanda(NOW) as venue:
        venue.inject(Fault("out_of_order"), Fault("duplicates"))
        bars, stats = fetch_all(
            source(venue.url, max_candles=48), GBP, utc(2024, 3, 4), utc(2024, 3, 8), now=NOW
        )
    assert bars.equals(between(REAL, utc(2024, 3, 4), utc(2024, 3, 8)))
    assert stats.unsorted_pages >= 1 and stats.duplicates_dropped >= 1


def test_configuration_errors() -> None:
    assert granularity("5m") == "M5" and granularity("1h") == "H1"
    with pytest.raises(ValueError, match="no granularity"):
        granularity("7m")
    with pytest.raises(ValueError, match="environment"):
        OandaSource(token="t", environment="sandbox")
    with pytest.raises(ValueError, match="price"):
        OandaSource(token="t", price="X")
    with pytest.raises(ValueError, match="max_candles"):
        OandaSource(token="t", max_candles=5001)
    assert "token" not in repr(OandaSource(token="abc-secret")).replace("token=", "")
    assert "abc-secret" not in repr(OandaSource(token="abc-secret"))
    assert pl.DataFrame  # polars is the frame library of every source
    assert FetchStats().as_dict()["requests"] == 0


@pytest.mark.parametrize("fault", ["trickle", "trickle_headers"])
def test_a_trickling_answer_is_cut_off_at_the_deadline_and_asked_again(fault: str) -> None:
    # one byte every 50 ms: each read is far inside the 1 s read timeout, but the whole answer
    # would take minutes; the 2 s deadline (headers included) cuts it off.
    with oanda(NOW) as venue:
        venue.inject(Fault(fault, delay_s=0.05))  # type: ignore[arg-type]
        started = time.monotonic()
        bars, stats = fetch_all(
            source(venue.url, **SLACK), GBP, utc(2024, 3, 4), utc(2024, 3, 5), now=NOW
        )
        elapsed = time.monotonic() - started
    assert bars.equals(between(REAL, utc(2024, 3, 4), utc(2024, 3, 5)))
    assert stats.retry_reasons == {"deadline": 1}
    assert elapsed >= SLACK["deadline_s"]


def test_a_secret_the_venue_echoes_is_masked() -> None:
    from ffe_dagster.sources.http import ReplyRules, check_reply

    rules = ReplyRules("OANDA (practice)", 30.0, lambda path, body: None, secrets=("s3cret",))
    body = b'{"errorMessage": "token s3cret is not valid"}'
    with pytest.raises(PermanentSourceError) as error:
        check_reply(rules, "GET /v3/x", 401, body, {})
    assert str(error.value) == (
        "OANDA (practice) GET /v3/x refused the request with HTTP 401: token *** is not valid"
    )
