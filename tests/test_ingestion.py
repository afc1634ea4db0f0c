"""raw_bars and validated_bars against local venues that speak the real APIs (real ccxt and
oandapyV20 clients, real bundled bars): backfills, resume after a failure or a kill, the open
partition refreshed incrementally, acquisition and validation summaries."""

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from dagster import DagsterInstance, EnvVar, build_schedule_context

from ffe_dagster.config import ConfigError, load_universe
from ffe_dagster.config.credentials import OANDA_TOKEN_ENV
from ffe_dagster.config.settings import PACKAGE_DIR, PROJECT_DIR, Settings
from ffe_dagster.core.data.resample import resample_bars
from ffe_dagster.definitions import build_definitions
from ffe_dagster.resources.market_data import market_data_resource
from ffe_dagster.resources.warehouse import WarehouseResource
from tests.fakes.harness import (
    Ingestion,
    between,
    check_outcomes,
    coinbase,
    live_universe,
    materialization_metadata,
    oanda,
    real_bars,
    utc,
)
from tests.fakes.venues import Fault

BTC = real_bars("BTC_USDT_5m")
GBP = real_bars("GBP_USD_1h")
ALL_CHECKS = {
    "gx_suite_passes": True,
    "quarantine_rate_within_limit": True,
    "bar_spacing_regular": True,
    "bars_fresh": True,
}


@pytest.fixture
def ingestion(tmp_path: Path) -> Iterator[Ingestion]:
    with DagsterInstance.ephemeral() as instance:
        yield Ingestion(
            universe=live_universe(tmp_path),
            warehouse=WarehouseResource(path=str(tmp_path / "warehouse.duckdb")),
            instance=instance,
        )


def test_crypto_backfill_stores_exactly_the_real_bars(ingestion: Ingestion) -> None:
    now = utc(2023, 3, 25, 12, 2)  # the 12:00 candle is still open
    with coinbase(now) as venue:
        ingestion.coinbase_url = venue.url
        result = ingestion.run("BTC_USDT", date(2023, 3, 20), date(2023, 3, 26), now=now)

    assert result.success
    expected = between(BTC, utc(2023, 3, 20), utc(2023, 3, 25, 12))
    assert ingestion.raw("BTC_USDT").equals(expected)  # incl. the real 16-bar halt on 03-24
    summary = materialization_metadata(result, "raw_bars")
    assert summary["bars_fetched"] == expected.height == 1_568
    # 2 market-list requests, then 300-bar pages over 5.5 days (03-26 is in the future), and
    # the halt's 16 missing bars asked for once more (a hole inside a page)
    assert summary["requests"] == 2 + -(-1_584 // 300) + 1 == venue.candle_requests + 2
    assert summary["by_instrument"]["BTC_USDT"]["refetches"] == 1
    assert summary["retries"] == 0
    assert summary["first_bar"] == "2023-03-20T00:00:00+00:00"
    assert summary["last_bar"] == "2023-03-25T11:55:00+00:00"
    assert summary["gaps"] == 1  # Binance's trading halt, 2023-03-24 12:40..14:00
    by_instrument = summary["by_instrument"]["BTC_USDT"]
    assert by_instrument["largest_gap"] == "2023-03-24 12:40 .. 2023-03-24 14:00 UTC (16 bars)"
    assert by_instrument["unclosed_dropped"] == 1

    assert check_outcomes(result) == ALL_CHECKS
    validation = materialization_metadata(result, "validated_bars")
    assert validation["rows_checked"] == expected.height
    assert validation["rows_quarantined"] == 0
    assert validation["failures_by_rule"] == {}
    assert validation["checks"] >= 17

    # 1h bars derived from the 5m ones equal Binance's own 1h bars on every complete hour
    hourly = ingestion.warehouse.read_bars("validated_bars", "BTC_USDT")
    assert hourly.equals(ingestion.warehouse.read_bars_by_interval("BTC_USDT", "1h"))
    assert hourly["ts"].max() == utc(2023, 3, 25, 11)  # the open hour is not stored
    binance_1h = between(real_bars("BTC_USDT_1h"), utc(2023, 3, 20), utc(2023, 3, 25, 12))
    complete = expected.group_by(pl.col("ts").dt.truncate("1h")).len().filter(pl.col("len") == 12)
    ohlc = ["ts", "open", "high", "low", "close"]
    mine = hourly.filter(pl.col("ts").is_in(complete["ts"].implode())).select(ohlc)
    theirs = binance_1h.filter(pl.col("ts").is_in(complete["ts"].implode())).select(ohlc)
    assert mine.height == complete.height == 130
    assert mine.equals(theirs)
    quarter = ingestion.warehouse.read_bars_by_interval("BTC_USDT", "15m")
    assert quarter.equals(resample_bars(expected, "15m", source_interval="5m"))


def test_forex_backfill_pages_over_weekends(ingestion: Ingestion) -> None:
    now = utc(2024, 3, 8, 12, 30)  # a Friday; the 12:00 candle is still forming
    ingestion.max_candles = 48  # two days per request: several pages, weekends inside them
    with oanda(now) as venue:
        ingestion.oanda_url = venue.url
        result = ingestion.run("GBP_USD", date(2024, 2, 26), date(2024, 3, 8), now=now)

    assert result.success
    expected = between(GBP, utc(2024, 2, 26), utc(2024, 3, 8, 12))
    assert ingestion.raw("GBP_USD").equals(expected)
    assert all(s.params["granularity"] == "H1" and s.params["price"] == "M" for s in venue.served)
    assert all(s.status == 200 for s in venue.served)
    summary = materialization_metadata(result, "raw_bars")
    assert summary["gaps"] == 0  # the weekend is a closure, not a gap
    assert summary["by_instrument"]["GBP_USD"]["unclosed_dropped"] == 1
    assert check_outcomes(result) == ALL_CHECKS


def test_open_partition_is_refreshed_incrementally(ingestion: Ingestion) -> None:
    day = date(2023, 3, 25)
    with coinbase(utc(2023, 3, 25, 10, 2)) as venue:
        ingestion.coinbase_url = venue.url
        first = ingestion.run("BTC_USDT", date(2023, 3, 24), day, now=utc(2023, 3, 25, 10, 2))
        venue.now = utc(2023, 3, 25, 12, 2)
        before = venue.candle_requests
        second = ingestion.run("BTC_USDT", date(2023, 3, 24), day, now=venue.now)

    assert first.success and second.success
    assert ingestion.raw("BTC_USDT").equals(between(BTC, utc(2023, 3, 24), utc(2023, 3, 25, 12)))
    # the second cycle asks only for what is newer than the last stored bar (09:55)
    asked = venue.served[before:]
    assert [s.params["start"] for s in asked] == ["2023-03-25T10:00:00.000Z"]
    summary = materialization_metadata(second, "raw_bars")["by_instrument"]["BTC_USDT"]
    assert summary["days_skipped_complete"] == 1  # 03-24 was complete
    assert summary["bars_fetched"] == 24
    assert check_outcomes(second)["bars_fresh"]


def test_backfill_resumes_after_a_failure_where_it_stopped(ingestion: Ingestion) -> None:
    now = utc(2023, 3, 31)
    with coinbase(now) as venue:
        ingestion.coinbase_url = venue.url
        venue.inject(*[Fault("ok")] * 5, Fault("unauthorized"))  # the 6th page fails
        failed = ingestion.run("BTC_USDT", date(2023, 3, 1), date(2023, 3, 10), now=now)
        requests_before = venue.candle_requests
        resumed = ingestion.run("BTC_USDT", date(2023, 3, 1), date(2023, 3, 10), now=now)

    assert not failed.success
    failure = materialization_metadata(failed, "raw_bars")
    assert "401" in failure["by_instrument"]["BTC_USDT"]["error"]
    # five pages of 300 bars (5 x 25 h) completed five days, which were stored and are skipped
    assert resumed.success
    assert venue.candle_requests - requests_before == -(-5 * 288 // 300)
    summary = materialization_metadata(resumed, "raw_bars")["by_instrument"]["BTC_USDT"]
    assert summary["days_skipped_complete"] == 5
    assert ingestion.raw("BTC_USDT").equals(between(BTC, utc(2023, 3, 1), utc(2023, 3, 11)))


@pytest.fixture
def monthly(tmp_path: Path) -> Iterator[Ingestion]:
    """The live universe at the default grain: month x instrument partitions."""
    with DagsterInstance.ephemeral() as instance:
        yield Ingestion(
            universe=live_universe(tmp_path, grain="month"),
            warehouse=WarehouseResource(path=str(tmp_path / "warehouse.duckdb")),
            instance=instance,
        )


def test_open_month_resumes_refreshes_and_rewrites_idempotently(monthly: Ingestion) -> None:
    month = date(2023, 3, 1)  # the key of March 2023, open on the 25th
    now = utc(2023, 3, 25, 10, 2)
    with coinbase(now) as venue:
        monthly.coinbase_url = venue.url
        venue.inject(*[Fault("ok")] * 5, Fault("unauthorized"))  # the 6th page fails
        failed = monthly.run("BTC_USDT", month, month, now=now)
        resumed = monthly.run("BTC_USDT", month, month, now=now)
        venue.now = utc(2023, 3, 25, 16, 2)  # six hours later
        before = len(venue.served)
        refreshed = monthly.run("BTC_USDT", month, month, now=venue.now)
        asked = venue.served[before:]
        rewritten = monthly.run(
            "BTC_USDT",
            month,
            month,
            now=venue.now,
            run_config={"ops": {"raw_bars": {"config": {"refetch": True}}}},
        )

    assert not failed.success and resumed.success
    # five pages of 300 bars completed five days: kept, and skipped on resume
    resume = materialization_metadata(resumed, "raw_bars")["by_instrument"]["BTC_USDT"]
    assert resume["days_skipped_complete"] == 5
    # the next cycle asks only for bars after the newest stored one (10:00 opens the open bar)
    assert refreshed.success
    assert [s.params["start"] for s in asked] == ["2023-03-25T10:00:00.000Z"]
    refresh = materialization_metadata(refreshed, "raw_bars")["by_instrument"]["BTC_USDT"]
    assert refresh["days_skipped_complete"] == 24  # March 1..24 were complete
    assert refresh["bars_fetched"] == 6 * 12
    assert check_outcomes(refreshed)["bars_fresh"]
    # re-materializing the month from scratch replaces it: no bar twice, none lost
    assert rewritten.success
    assert monthly.raw("BTC_USDT").equals(between(BTC, utc(2023, 3, 1), utc(2023, 3, 25, 16)))


@pytest.mark.slow
def test_backfill_killed_at_a_random_moment_ends_with_exactly_the_right_bars(
    ingestion: Ingestion, tmp_path: Path
) -> None:
    now = utc(2023, 3, 31)
    rng = random.Random(os.getpid())
    with coinbase(now) as venue:
        ingestion.coinbase_url = venue.url
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fakes.backfill_child",
                ingestion.warehouse.path,
                venue.url,
                "2023-02-01",
                "2023-02-15",
                now.isoformat(),
            ],
            cwd=PROJECT_DIR,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        kill_after = rng.randint(3, 10)
        deadline = time.monotonic() + 60
        while venue.candle_requests < kill_after and child.poll() is None:
            assert time.monotonic() < deadline, "the child never reached its pages"
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))  # anywhere between two requests, or mid-write
        child.send_signal(signal.SIGKILL)
        child.wait()
        killed_at = venue.candle_requests
        resumed = ingestion.run("BTC_USDT", date(2023, 2, 1), date(2023, 2, 14), now=now)

    assert child.returncode == -signal.SIGKILL, "the child finished before it was killed"
    assert resumed.success
    assert ingestion.raw("BTC_USDT").equals(between(BTC, utc(2023, 2, 1), utc(2023, 2, 15)))
    skipped = materialization_metadata(resumed, "raw_bars")["by_instrument"]["BTC_USDT"][
        "days_skipped_complete"
    ]
    assert skipped >= 1, f"killed after {killed_at} requests, nothing was kept"
    assert venue.candle_requests - killed_at < 14 * 288 / 300  # resumed, not from zero


def test_unknown_symbol_fails_clearly_and_keeps_stored_bars(ingestion: Ingestion) -> None:
    now = utc(2023, 3, 31)
    with coinbase(now) as venue:
        ingestion.coinbase_url = venue.url
        assert ingestion.run("BTC_USDT", date(2023, 3, 1), date(2023, 3, 1), now=now).success
        requests = venue.candle_requests
        path = Path(ingestion.warehouse.path).parent / "universe.yaml"
        path.write_text(path.read_text().replace("symbol: BTC/USDT", "symbol: DOGE/USDT"))
        ingestion.universe = load_universe(path)
        result = ingestion.run("BTC_USDT", date(2023, 3, 2), date(2023, 3, 2), now=now)

    assert not result.success
    error = materialization_metadata(result, "raw_bars")["by_instrument"]["BTC_USDT"]["error"]
    assert "coinbaseexchange has no market 'DOGE/USDT'" in error
    assert venue.candle_requests == requests  # found out from the market list, no candle asked
    assert ingestion.raw("BTC_USDT").equals(between(BTC, utc(2023, 3, 1), utc(2023, 3, 2)))


def test_live_universe_binds_the_token_through_envvar_and_needs_it_to_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(OANDA_TOKEN_ENV, raising=False)
    live = load_universe(PACKAGE_DIR / "config" / "universe_live.yaml")
    resource = market_data_resource(live, tmp_path)
    assert resource.oanda_token == EnvVar(OANDA_TOKEN_ENV)
    assert resource.ccxt is not None and resource.ccxt.exchange == "coinbaseexchange"
    assert resource.ccxt.max_requests_per_second == 3
    assert resource.oanda is not None and resource.oanda.max_requests_per_second == 2
    files_only = load_universe(PACKAGE_DIR / "config" / "universe.yaml")
    assert market_data_resource(files_only, tmp_path).oanda_token is None

    settings = Settings.from_env(
        {
            "FFE_VAR_DIR": str(tmp_path / "var"),
            "FFE_UNIVERSE": str(PACKAGE_DIR / "config" / "universe_live.yaml"),
        }
    )
    # The OANDA source is in use: without its token the definitions do not load.
    with pytest.raises(ConfigError, match=f"{OANDA_TOKEN_ENV} is not set .* EUR_USD, GBP_USD"):
        build_definitions(settings)
    monkeypatch.setenv(OANDA_TOKEN_ENV, "fake-token")
    defs = build_definitions(settings)
    schedule = defs.resolve_schedule_def("cycle_schedule")
    partitions = defs.resolve_job_def("ingest_job").partitions_def
    assert partitions is not None
    ranges = {}
    for when in (utc(2024, 3, 5, 6), utc(2024, 3, 1, 3)):
        with DagsterInstance.ephemeral() as instance:
            context = build_schedule_context(
                instance=instance,
                scheduled_execution_time=when,
                repository_def=defs.get_repository_def(),
            )
            (request,) = schedule.evaluate_tick(context).run_requests or []
        assert request.partition_key_range is not None
        keys = partitions.get_partition_keys_in_range(request.partition_key_range)
        ranges[when.day] = sorted(str(k) for k in keys)
    instruments = ("BTC_USD", "ETH_USD", "EUR_USD", "GBP_USD")
    # one run: the open month of every instrument (it holds the newest ended day too) ...
    assert ranges[5] == sorted(f"2024-03-01|{key}" for key in instruments)
    # ... and on the 1st, also the month that ended last night
    assert ranges[1] == sorted(
        f"{m}|{key}" for m in ("2024-02-01", "2024-03-01") for key in instruments
    )


def test_oanda_token_never_reaches_events_or_errors(ingestion: Ingestion) -> None:
    now = utc(2024, 3, 8)
    secret = "s3cr3t-token-value"
    ingestion.oanda_token = secret  # the server expects another token: 401
    with oanda(now) as venue:
        ingestion.oanda_url = venue.url
        result = ingestion.run("GBP_USD", date(2024, 3, 4), date(2024, 3, 5), now=now)

    assert not result.success
    error = materialization_metadata(result, "raw_bars")["by_instrument"]["GBP_USD"]["error"]
    assert "OANDA rejected the access token (HTTP 401)" in error
    assert len(venue.served) == 1  # a rejected token is not retried
    events = "\n".join(repr(e) for e in result.all_events)
    assert secret not in events
    assert ingestion.raw("GBP_USD").height == 0


def _days_of(frame: pl.DataFrame) -> int:
    return frame["ts"].dt.date().n_unique()


def test_validated_bars_resample_the_fetched_interval(ingestion: Ingestion) -> None:
    now = utc(2023, 3, 3)
    with coinbase(now) as venue:
        ingestion.coinbase_url = venue.url
        assert ingestion.run("BTC_USDT", date(2023, 3, 1), date(2023, 3, 2), now=now).success
    counts = ingestion.warehouse.read_table(
        "SELECT interval, count(*) AS n FROM validated_bars_by_interval GROUP BY 1 ORDER BY 2"
    )
    assert dict(counts.iter_rows()) == {"1h": 48, "15m": 192, "5m": 576}
    assert _days_of(ingestion.warehouse.read_bars("validated_bars", "BTC_USDT")) == 2
    assert ingestion.warehouse.count("ingest_progress", "BTC_USDT") == 2
