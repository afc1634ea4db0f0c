"""Worlds for ``make bench-integrity``: bars and entry signals with a known edge, or none.

Pure helpers (no file or database I/O): each takes frames and a seeded numpy generator and
returns frames, so a world is reproduced exactly from its seed.

- ``random_signals``: -1 / +1 on a chosen share of bars, drawn without looking at prices (null).
- ``block_shuffled_bars``: the bars' own moves in shuffled blocks, so any pattern longer than a
  block is destroyed while each bar keeps its shape (null for the built-in strategies).
- ``planted_signals``: signals whose side matches the sign of the next ``horizon`` bars' return
  with probability ``hit_rate`` (a planted edge of known size).
- ``wilson_interval``: the 95 % interval of a share measured over ``n`` worlds.
"""

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

Z95 = 1.959963984540054  # the two-sided 95 % quantile of the standard normal


@dataclass(frozen=True, slots=True)
class Share:
    """A measured share with its 95 % Wilson interval."""

    hits: int
    n: int
    rate: float
    low: float
    high: float


def wilson_interval(hits: int, n: int, z: float = Z95) -> Share:
    """``hits / n`` with its Wilson score interval (Wilson 1927).

    Unlike the normal approximation it stays inside [0, 1] and is not empty at 0 or n hits,
    which is where a false-promotion rate near zero lives.
    """
    if n <= 0 or not 0 <= hits <= n:
        raise ValueError(f"need 0 <= hits <= n and n > 0, got hits={hits}, n={n}")
    p = hits / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return Share(hits, n, p, max(0.0, centre - half), min(1.0, centre + half))


def random_signals(ts: pl.Series, density: float, rng: np.random.Generator) -> pl.DataFrame:
    """A signal file's rows for bars ``ts``: each bar has a signal with probability
    ``density``, long or short with equal odds. Only ``rng`` decides, never a price."""
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    n = ts.len()
    fires = rng.random(n) < density
    side = np.where(rng.random(n) < 0.5, 1, -1).astype(np.int8)
    return pl.DataFrame({"ts": ts.filter(pl.Series(fires)), "signal": side[fires]})


def forward_sign(close: np.ndarray, horizon: int) -> np.ndarray:
    """Sign of ``close[t + horizon] / close[t] - 1`` per bar; 0 where there is no future bar
    or the price did not move."""
    out = np.zeros(close.shape[0], dtype=np.int8)
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1 bar, got {horizon}")
    if close.shape[0] > horizon:
        out[:-horizon] = np.sign(close[horizon:] - close[:-horizon]).astype(np.int8)
    return out


def planted_signals(
    bars: pl.DataFrame,
    *,
    density: float,
    hit_rate: float,
    horizon: int,
    rng: np.random.Generator,
) -> pl.DataFrame:
    """A signal file's rows for ``bars`` with a planted edge.

    Bars are drawn with probability ``density`` among those whose price moves over the next
    ``horizon`` bars; each signal takes the side of that move with probability ``hit_rate`` and
    the other side otherwise. ``hit_rate`` 0.5 is no edge.
    """
    if not 0.0 < density <= 1.0 or not 0.0 <= hit_rate <= 1.0:
        raise ValueError(f"density in (0, 1] and hit_rate in [0, 1], got {density}, {hit_rate}")
    truth = forward_sign(bars["close"].to_numpy(), horizon)
    fires = (rng.random(truth.shape[0]) < density) & (truth != 0)
    right = rng.random(truth.shape[0]) < hit_rate
    side = np.where(right, truth, -truth).astype(np.int8)
    return pl.DataFrame({"ts": bars["ts"].filter(pl.Series(fires)), "signal": side[fires]})


def block_shuffled_bars(bars: pl.DataFrame, block: int, rng: np.random.Generator) -> pl.DataFrame:
    """``bars`` rebuilt from their own moves taken in shuffled blocks of ``block`` bars.

    Each bar is kept as its shape relative to the previous close: the gap ``open / prev close``
    and ``high / open``, ``low / open``, ``close / open``. Blocks of consecutive bars are
    permuted and prices re-chained from the first close, so every bar keeps high >= max(open,
    close) and low <= min(open, close), the close-to-close returns are the same multiset, and
    volatility clustering inside a block survives; trends and cycles longer than a block do
    not. Timestamps stay where they were; each bar's volume moves with it.
    """
    if block < 1:
        raise ValueError(f"block must be >= 1 bar, got {block}")
    o, h, lo, c = (bars[k].to_numpy().astype(np.float64) for k in ("open", "high", "low", "close"))
    n = c.shape[0]
    if n < 2:
        return bars.clone()
    # Bar 0 has no previous close: it stays first and anchors the price level.
    idx = np.arange(1, n)
    starts = np.arange(0, idx.shape[0], block)
    order = rng.permutation(starts.shape[0])
    moved = np.concatenate([idx[s : s + block] for s in starts[order]])
    gap = o[moved] / c[moved - 1]
    shape_h, shape_l, shape_c = h[moved] / o[moved], lo[moved] / o[moved], c[moved] / o[moved]
    step = gap * shape_c  # close / previous close of each moved bar
    closes = c[0] * np.cumprod(step)
    opens = np.concatenate(([c[0]], closes[:-1])) * gap
    new_o = np.concatenate(([o[0]], opens))
    new_c = np.concatenate(([c[0]], closes))
    # The shape ratios re-applied; max/min guard the last ulp so the OHLC rules hold exactly.
    new_h = np.concatenate(([h[0]], np.maximum(opens * shape_h, np.maximum(opens, closes))))
    new_l = np.concatenate(([lo[0]], np.minimum(opens * shape_l, np.minimum(opens, closes))))
    # Gathered in polars so a column without volume (EUR/USD: null everywhere) stays null.
    new_v = bars["volume"].gather(np.concatenate(([0], moved)))
    return bars.with_columns(
        pl.Series("open", new_o),
        pl.Series("high", new_h),
        pl.Series("low", new_l),
        pl.Series("close", new_c),
        new_v,
    )
