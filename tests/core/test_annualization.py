"""Each instrument is annualized with its own market's bars per year, derived from its schedule.

Hand-worked: crypto trades 365.25 x 24 = 8,766 hours a year. Forex is closed Fri 22:00 to Sun
22:00 UTC (48 of 168 hours), so 8,766 x 120 / 168 = 6,261.43 hours, less the Christmas and New
Year closures (24 h each, from 22:00 the day before), which cost hours on the 5 of 7 weekdays
that are not Saturday or Sunday: 2 x 24 x 5/7 = 34.29 h, so 6,227.14 hours a year.
"""

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from ffe_dagster.config import load_universe
from ffe_dagster.config.settings import PACKAGE_DIR
from ffe_dagster.core.backtest.metrics import sharpe_ratio
from ffe_dagster.core.backtest.reference import BacktestRun, pool_metrics
from ffe_dagster.core.data.bars import Instrument, MarketKind, MarketSchedule

HOUR = timedelta(hours=1)
FOREX_HOURS = 365.25 * 24 * 120 / 168 - 2 * 24 * 5 / 7


def test_bars_per_year_from_the_schedule() -> None:
    assert MarketSchedule.for_market(MarketKind.CRYPTO).bars_per_year(HOUR) == 8766.0
    forex = MarketSchedule.for_market(MarketKind.FOREX)
    assert forex.bars_per_year(HOUR) == pytest.approx(FOREX_HOURS, rel=1e-12)
    assert FOREX_HOURS == pytest.approx(6227.142857, rel=1e-9)
    assert forex.bars_per_year(timedelta(minutes=5)) == pytest.approx(FOREX_HOURS * 12, rel=1e-12)
    eur = Instrument("EUR_USD", "EUR_USD", MarketKind.FOREX)
    assert eur.bars_per_year(HOUR) == pytest.approx(FOREX_HOURS, rel=1e-12)
    with pytest.raises(ValueError, match="positive"):
        forex.bars_per_year(timedelta(0))


def test_bundled_eur_usd_has_about_the_schedules_bars_per_year() -> None:
    # The bundled EUR/USD hours of 2023 (a full year): the schedule's figure is within 2 % of the
    # bars really present (some hours have no quote), where the old 252 x 24 = 6,048 was not.
    frame = pl.read_parquet(PACKAGE_DIR / "data" / "samples" / "EUR_USD_1h.parquet").filter(
        (pl.col("ts") >= datetime(2023, 1, 1, tzinfo=UTC))
        & (pl.col("ts") < datetime(2024, 1, 1, tzinfo=UTC))
    )
    assert abs(frame.height / FOREX_HOURS - 1.0) < 0.02
    by_key = {i.key: i for i in load_universe(PACKAGE_DIR / "config" / "universe.yaml").instruments}
    assert by_key["EUR_USD"].bars_per_year(HOUR) == pytest.approx(FOREX_HOURS)
    assert by_key["BTC_USDT"].bars_per_year(HOUR) == 8766.0


def test_pooled_sharpe_weights_each_instruments_factor_by_its_bars() -> None:
    # Crypto 3 bars, forex 1 bar: pooled per-bar Sharpe of the 4 returns times the square root of
    # (3 x 8766 + 1 x 6227.14) / 4.
    crypto = np.array([0.01, -0.005, 0.002])
    forex = np.array([0.004])
    runs = [BacktestRun(r, np.zeros(0), np.zeros(0), 0, np.zeros(r.size)) for r in (crypto, forex)]
    pooled = pool_metrics(runs, [8766.0, FOREX_HOURS])
    r = np.concatenate([crypto, forex])
    per_bar = r.mean() / r.std(ddof=1)
    assert pooled.sharpe == pytest.approx(
        per_bar * math.sqrt((3 * 8766.0 + FOREX_HOURS) / 4), rel=1e-12
    )
    assert sharpe_ratio(forex, periods_per_year=FOREX_HOURS) == 0.0  # one bar: undefined
