"""OHLCV bar schema, normalization and market calendars.

Every source returns bars in one schema: ``ts`` is the bar *open* time in UTC (microseconds),
followed by ``open, high, low, close, volume`` as float64. Forex feeds without volume carry nulls.
"""

from dataclasses import dataclass
from datetime import timedelta
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


class MarketKind(StrEnum):
    """Which trading calendar an instrument follows."""

    CRYPTO = "crypto"
    FOREX = "forex"


@dataclass(frozen=True, slots=True)
class Instrument:
    """One tradable instrument of the universe.

    ``key`` is the Dagster partition key (``BTC_USDT``); ``symbol`` is the venue symbol
    (``BTC/USDT``); ``has_volume`` is False for feeds that publish no volume (Dukascopy forex).
    """

    key: str
    symbol: str
    market: MarketKind
    has_volume: bool = True

    @property
    def trading_days_per_year(self) -> int:
        """Days per year the market trades, for annualization (crypto 365, forex 252)."""
        return 365 if self.market is MarketKind.CRYPTO else 252


def interval_to_timedelta(interval: str) -> timedelta:
    """Parse ``5m``, ``15m``, ``1h``, ``4h`` or ``1d`` into a timedelta."""
    units = {"m": "minutes", "h": "hours", "d": "days"}
    unit = interval[-1:]
    if unit not in units or not interval[:-1].isdigit():
        raise ValueError(f"unsupported bar interval {interval!r}; use e.g. 5m, 15m, 1h, 1d")
    return timedelta(**{units[unit]: int(interval[:-1])})


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
