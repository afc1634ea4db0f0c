"""What the promotion-cycle and rollback tests share: parameter sets found on the bundled bars
of 2022, the bars cut at an instant, one promotion cycle on a registry (the SQL one or the
in-memory fake), and live trades as the trading system reports them."""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import polars as pl

from ffe_dagster.config.settings import PACKAGE_DIR
from ffe_dagster.core.backtest.reference import CostModel, Direction
from ffe_dagster.core.backtest.strategies import get_strategy
from ffe_dagster.core.promotion.config import PromotionConfig
from ffe_dagster.core.promotion.performance import (
    LIVE_RESULT_COLUMNS,
    combine_live_results,
)
from ffe_dagster.core.promotion.registry_protocol import PromotionRegistry
from ffe_dagster.promotion.decisions import CycleReport
from ffe_dagster.promotion.state_machine import (
    Market,
    RegimeCandidates,
    run_promotion_cycle,
)

PPY = {"BTC_USDT": 24 * 365.0, "ETH_USDT": 24 * 365.0}
STRATEGY = get_strategy("sma_crossover")
CONFIG = PromotionConfig()
HOUR = timedelta(hours=1)


def params(fast: int, slow: int, stop: float, take: float) -> dict[str, float | int | str]:
    return {
        "fast_window": fast,
        "slow_window": slow,
        "stop_loss_pct": stop,
        "take_profit_pct": take,
        "position_size_pct": 1.0,
        "trailing_stop_pct": 2.0,
        "stop_mode": "fixed",
    }


# Found by scanning sets on these bars: A passes COLD on 2022-11-01 and WARM 13 days later; B
# fails COLD then (its Sharpe fell more than 30 % below its validation Sharpe) and passes it
# on 2022-11-17; LOSER loses $7.90 on one day of May 2022.
A = params(10, 29, 4.9, 2.8)
B = params(14, 21, 4.4, 2.7)
LOSER = params(7, 30, 1.4, 1.2)
T0 = datetime(2022, 11, 1, tzinfo=UTC)


def load_history() -> dict[str, pl.DataFrame]:
    """The bundled hourly BTC/USDT and ETH/USDT bars of 2022."""
    out = {}
    for symbol in PPY:
        frame = pl.read_parquet(PACKAGE_DIR / "data" / "samples" / f"{symbol}_1h.parquet")
        out[symbol] = frame.filter(
            (pl.col("ts") >= datetime(2022, 1, 1, tzinfo=UTC))
            & (pl.col("ts") < datetime(2023, 1, 1, tzinfo=UTC))
        ).select("ts", "open", "high", "low", "close", "volume")
    return out


def upto(history: dict[str, pl.DataFrame], moment: datetime) -> dict[str, pl.DataFrame]:
    return {k: f.filter(pl.col("ts") <= moment) for k, f in history.items()}


def market(bars: dict[str, pl.DataFrame]) -> Market:
    return Market(
        bars=bars, periods_per_year=PPY, strategy=STRATEGY, costs=CostModel(), bar_period=HOUR
    )


def run_cycle(
    registry: PromotionRegistry,
    bars: dict[str, pl.DataFrame],
    now: datetime,
    run_id: str,
    candidates: Sequence[RegimeCandidates] = (),
    live: pl.DataFrame | None = None,
) -> CycleReport:
    return run_promotion_cycle(
        registry,
        regimes=candidates,
        market=market(bars),
        live=combine_live_results([]) if live is None else live,
        now=now,
        config=CONFIG,
        level_directions={4: Direction.BOTH},
        trigger="schedule",
        run_id=run_id,
    )


def decisions(report: CycleReport) -> list[tuple[str, int | None, str, str]]:
    return [(r.regime, r.version, r.stage, r.decision) for r in report.rows]


def live_trades(
    version: int, start: datetime, pnls: Sequence[float], regime: str = "DEFAULT"
) -> pl.DataFrame:
    """Trades the trading system reports: one closes every 70 minutes from ``start``."""
    closes = [start + timedelta(minutes=70 * i) for i in range(len(pnls))]
    return pl.DataFrame(
        {
            "trade_id": [f"{regime}-{version}-{i}" for i in range(len(pnls))],
            "regime": [regime] * len(pnls),
            "version": [version] * len(pnls),
            "instrument": ["BTC_USDT"] * len(pnls),
            "opened_at": [c - timedelta(minutes=30) for c in closes],
            "closed_at": closes,
            "pnl_usd": list(pnls),
            "capital_usd": [1000.0] * len(pnls),
        },
        schema=dict(LIVE_RESULT_COLUMNS),
    )
