"""Market-regime detection (BULL / BEAR / SIDEWAYS) from OHLCV bars.

Everything is computed on daily closes (UTC calendar days) and applied to the bars of the
*following* day, so a bar never sees information from its own day or later. Pure module: no
Dagster, no MLflow.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import polars as pl

from ffe_dagster.core.data.bars import TS_DTYPE


class Regime(StrEnum):
    """Direction of the market over the momentum window."""

    BULL = "BULL"
    BEAR = "BEAR"
    SIDEWAYS = "SIDEWAYS"


@dataclass(frozen=True, slots=True)
class RegimeConfig:
    """Thresholds of the regime classifier; the defaults are the product spec.

    ``min_persistence_days`` and ``min_confidence_pct`` only matter to ``confirmed_regime``.
    Raises ``ValueError`` on non-positive windows or thresholds and on inconsistent bands.
    """

    momentum_days: int = 7
    momentum_threshold_pct_per_day: float = 1.0
    volatility_days: int = 20
    high_volatility_pct: float = 2.5
    low_volatility_pct: float = 0.8
    min_persistence_days: int = 2
    min_confidence_pct: float = 60.0

    def __post_init__(self) -> None:
        if self.momentum_days < 1 or self.volatility_days < 2:
            raise ValueError("momentum_days must be >= 1 and volatility_days >= 2")
        if self.momentum_threshold_pct_per_day <= 0:
            raise ValueError("momentum_threshold_pct_per_day must be > 0")
        if not 0 <= self.low_volatility_pct <= self.high_volatility_pct:
            raise ValueError("need 0 <= low_volatility_pct <= high_volatility_pct")
        if self.min_persistence_days < 0 or not 0 <= self.min_confidence_pct <= 100:
            raise ValueError("need min_persistence_days >= 0 and 0 <= min_confidence_pct <= 100")


REGIME_SCHEMA: dict[str, pl.DataType] = {
    "ts": TS_DTYPE,
    "regime": pl.String(),
    "momentum_pct_per_day": pl.Float64(),
    "volatility_pct": pl.Float64(),
    "trend_efficiency": pl.Float64(),
    "volume_ratio": pl.Float64(),
    "confidence_pct": pl.Float64(),
    "volatility_level": pl.String(),
}
VOLUME_LONG_DAYS = 30
_REQUIRED_COLUMNS = ("ts", "close", "volume")


def _daily(bars: pl.DataFrame) -> pl.DataFrame:
    """One row per UTC day that has bars: last close and summed volume (null if none)."""
    return bars.group_by_dynamic("ts", every="1d").agg(
        pl.col("close").last(),
        pl.when(pl.col("volume").is_not_null().any())
        .then(pl.col("volume").sum())
        .otherwise(None)
        .alias("volume"),
    )


def _daily_indicators(daily: pl.DataFrame, config: RegimeConfig) -> pl.DataFrame:
    """Indicators, regime and confidence per complete-history day (see ``detect_regimes``)."""
    n = config.momentum_days
    t = config.momentum_threshold_pct_per_day
    close = pl.col("close")
    net_move = (close - close.shift(n)).abs()
    path = close.diff().abs().rolling_sum(n)
    long_volume = pl.col("volume").rolling_mean(VOLUME_LONG_DAYS)
    momentum = pl.col("momentum_pct_per_day")
    efficiency = pl.col("trend_efficiency")
    volatility = pl.col("volatility_pct")
    trending = 50 * ((momentum.abs() - t) / t).clip(upper_bound=1.0) + 50 * efficiency
    ranging = 50 * (1 - momentum.abs() / t) + 50 * (1 - efficiency)
    return (
        daily.with_columns(
            ((close / close.shift(n) - 1) * 100 / n).alias("momentum_pct_per_day"),
            ((close / close.shift(1) - 1).rolling_std(config.volatility_days) * 100).alias(
                "volatility_pct"
            ),
            # A perfectly flat window has no path at all: call it pure noise (0), not NaN.
            pl.when(path > 0)
            .then((net_move / path).clip(0.0, 1.0))
            .when(path == 0)
            .then(0.0)
            .alias("trend_efficiency"),
            pl.when(long_volume > 0)
            .then(pl.col("volume").rolling_mean(n) / long_volume)
            .alias("volume_ratio"),
            (pl.col("ts") + timedelta(days=1)).alias("effective_from"),
        )
        .drop_nulls(["momentum_pct_per_day", "volatility_pct", "trend_efficiency"])
        .with_columns(
            pl.when(momentum > t)
            .then(pl.lit(Regime.BULL.value))
            .when(momentum < -t)
            .then(pl.lit(Regime.BEAR.value))
            .otherwise(pl.lit(Regime.SIDEWAYS.value))
            .alias("regime"),
            pl.when(momentum.abs() > t)
            .then(trending)
            .otherwise(ranging)
            .clip(0.0, 100.0)
            .alias("confidence_pct"),
            pl.when(volatility > config.high_volatility_pct)
            .then(pl.lit("HIGH"))
            .when(volatility < config.low_volatility_pct)
            .then(pl.lit("LOW"))
            .otherwise(pl.lit("NORMAL"))
            .alias("volatility_level"),
        )
    )


def detect_regimes(bars: pl.DataFrame, config: RegimeConfig) -> pl.DataFrame:
    """Label every bar with the regime of the previous complete UTC day.

    Daily series: per UTC calendar day, the last close and the summed volume. On day ``d``
    (``n = momentum_days``; "rows back" are daily rows, not calendar days: forex has no Saturday
    row and a short Sunday-evening row, so 7 rows span about 8 calendar days there):

    - ``momentum_pct_per_day = (close_d / close_{d-n} - 1) * 100 / n``;
    - ``volatility_pct``: sample std (ddof 1) of the last ``volatility_days`` daily simple
      returns, in %; ``volatility_level`` is HIGH above ``high_volatility_pct``, LOW below
      ``low_volatility_pct``, NORMAL otherwise;
    - ``trend_efficiency``: Kaufman efficiency ratio over ``n`` days,
      ``|close_d - close_{d-n}| / sum(|daily change|)`` in [0, 1], 0 when the price did not
      move at all (trend vs noise);
    - ``volume_ratio``: mean daily volume over ``n`` days / over ``VOLUME_LONG_DAYS`` (30)
      days; null without volume (forex), before 30 days of volume, or if that mean is 0;
    - ``regime``: BULL if momentum > +t, BEAR if < -t, else SIDEWAYS (t = threshold, %/day);
    - ``confidence_pct`` in [0, 100]: BULL/BEAR ``50 * min(1, (|m| - t) / t) + 50 * eff``,
      SIDEWAYS ``50 * (1 - |m| / t) + 50 * (1 - eff)``.

    Day ``d``'s values take effect at the start of day ``d + 1`` and hold until a later day's
    values take effect (as-of join, backward), so no bar sees its own day. Warm-up: the first
    daily row with full history is row ``max(n, volatility_days)`` (0-based); bars before it
    takes effect are dropped. Returns one row per remaining bar, sorted by ``ts``, in
    ``REGIME_SCHEMA``.
    Raises ``ValueError`` when ``ts``, ``close`` or ``volume`` is missing.
    """
    missing = [c for c in _REQUIRED_COLUMNS if c not in bars.columns]
    if missing:
        raise ValueError(f"bars are missing columns {missing}; got {bars.columns}")
    clean = (
        bars.select(
            pl.col("ts").cast(TS_DTYPE),
            pl.col("close").cast(pl.Float64),
            pl.col("volume").cast(pl.Float64).fill_nan(None),
        )
        .drop_nulls(["ts", "close"])
        .sort("ts")
    )
    if clean.is_empty():
        return pl.DataFrame(schema=REGIME_SCHEMA)
    indicators = _daily_indicators(_daily(clean), config).drop("ts", "close", "volume")
    labelled = clean.select("ts").join_asof(
        indicators, left_on="ts", right_on="effective_from", strategy="backward"
    )
    return (
        labelled.drop_nulls("regime")
        .select([pl.col(name).cast(dtype) for name, dtype in REGIME_SCHEMA.items()])
        .sort("ts")
    )


def _require(regimes: pl.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in regimes.columns]
    if missing:
        raise ValueError(f"regimes are missing columns {missing}; got {regimes.columns}")


def regime_segments(
    regimes: pl.DataFrame, regime: Regime, *, min_days: int
) -> list[tuple[datetime, datetime]]:
    """Maximal runs of consecutive rows labelled ``regime`` lasting at least ``min_days``.

    A run's span is its last ``ts`` minus its first ``ts`` (bar-open times, both inclusive),
    so a run of 49 hourly bars spans exactly 2 days. Gaps between rows (weekends) do not
    break a run. Returns ``[(first_ts, last_ts), ...]`` in time order.
    """
    _require(regimes, ("ts", "regime"))
    runs = (
        regimes.sort("ts")
        .with_columns(pl.col("regime").rle_id().alias("run"))
        .group_by("run", maintain_order=True)
        .agg(
            pl.col("regime").first(),
            pl.col("ts").first().alias("start"),
            pl.col("ts").last().alias("end"),
        )
        .filter(
            (pl.col("regime") == regime.value)
            & (pl.col("end") - pl.col("start") >= timedelta(days=min_days))
        )
    )
    return list(zip(runs["start"].to_list(), runs["end"].to_list(), strict=True))


def confirmed_regime(regimes: pl.DataFrame, config: RegimeConfig) -> Regime | None:
    """The current regime if it is confirmed, else ``None`` ("no confirmed change").

    Confirmed means: the last row's regime is also the regime of every row whose ``ts`` lies
    in the trailing ``min_persistence_days`` days (``ts >= last_ts - min_persistence_days``),
    the history reaches back at least that far, and the last row's ``confidence_pct`` is at
    least ``min_confidence_pct``. Earlier regimes are deliberately not searched, so a whipsaw
    or a low-confidence reading yields ``None`` and the caller keeps what it had.
    """
    _require(regimes, ("ts", "regime", "confidence_pct"))
    if regimes.is_empty():
        return None
    ordered = regimes.sort("ts")
    first_ts: datetime = ordered["ts"][0]
    last_ts: datetime = ordered["ts"][-1]
    current: str = ordered["regime"][-1]
    confidence: float | None = ordered["confidence_pct"][-1]
    cutoff = last_ts - timedelta(days=config.min_persistence_days)
    if first_ts > cutoff or confidence is None or confidence < config.min_confidence_pct:
        return None
    window = ordered.filter(pl.col("ts") >= cutoff)
    if (window["regime"] != current).any():
        return None
    return Regime(current)
