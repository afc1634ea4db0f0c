"""The world generators and the interval of ``make bench-integrity`` on small real data."""

import math

import numpy as np
import polars as pl
import pytest

from benchmarks.integrity_worlds import (
    block_shuffled_bars,
    forward_sign,
    planted_signals,
    random_signals,
    wilson_interval,
)
from ffe_dagster.config.settings import PACKAGE_DIR

SAMPLES = PACKAGE_DIR / "data" / "samples"


@pytest.fixture(scope="module")
def btc() -> pl.DataFrame:
    """4,000 real hourly BTC bars (2021)."""
    frame = pl.read_parquet(SAMPLES / "BTC_USDT_1h.parquet")
    return frame.slice(9000, 4000)


@pytest.fixture(scope="module")
def eur() -> pl.DataFrame:
    """Real hourly EUR/USD bars: no volume in any row (null), weekend gaps."""
    return pl.read_parquet(SAMPLES / "EUR_USD_1h.parquet").slice(0, 1500)


def test_wilson_interval_hand_worked() -> None:
    # 0 of 30: centre = (z^2 / 60) / (1 + z^2 / 30) = 0.0640243 / 1.128049 = 0.0567566 and the
    # half width is the same number, so the interval is [0, 0.113513].
    zero = wilson_interval(0, 30)
    assert zero.rate == 0.0 and zero.low == 0.0
    assert zero.high == pytest.approx(0.113513, abs=1e-6)
    # 24 of 30: centre (0.8 + 0.0640243) / 1.1280486 = 0.765946; half width
    # 1.959964 * sqrt(0.16 / 30 + 3.841459 / 3600) / 1.1280486 = 0.156802 / 1.1280486 = 0.139003.
    mid = wilson_interval(24, 30)
    assert mid.rate == pytest.approx(0.8)
    assert mid.low == pytest.approx(0.765946 - 0.139003, abs=2e-6)
    assert mid.high == pytest.approx(0.765946 + 0.139003, abs=2e-6)


@pytest.mark.parametrize(("hits", "n"), [(1, 40), (7, 31), (39, 40), (120, 160)])
def test_wilson_bounds_solve_the_score_equation(hits: int, n: int) -> None:
    # The Wilson bounds are the p where |p_hat - p| = z * sqrt(p (1 - p) / n): the roots of
    # (1 + z^2/n) p^2 - (2 p_hat + z^2/n) p + p_hat^2 = 0.
    z2 = 1.959963984540054**2
    p_hat = hits / n
    roots = sorted(np.roots([1 + z2 / n, -(2 * p_hat + z2 / n), p_hat**2]).real)
    share = wilson_interval(hits, n)
    assert share.low == pytest.approx(roots[0], abs=1e-12)
    assert share.high == pytest.approx(roots[1], abs=1e-12)
    assert share.low < share.rate < share.high


def test_wilson_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="hits"):
        wilson_interval(5, 4)
    with pytest.raises(ValueError, match="n > 0"):
        wilson_interval(0, 0)


def test_forward_sign_hand_worked() -> None:
    close = np.array([10.0, 11.0, 9.0, 9.0, 12.0])
    assert forward_sign(close, 1).tolist() == [1, -1, 0, 1, 0]
    assert forward_sign(close, 2).tolist() == [-1, -1, 1, 0, 0]


@pytest.mark.parametrize("hit_rate", [0.5, 0.64, 0.8])
def test_planted_signals_have_the_chosen_hit_rate(btc: pl.DataFrame, hit_rate: float) -> None:
    horizon = 24
    rows = planted_signals(
        btc, density=0.5, hit_rate=hit_rate, horizon=horizon, rng=np.random.default_rng(3)
    )
    truth = forward_sign(btc["close"].to_numpy(), horizon)
    at = btc.with_columns(pl.Series("truth", truth)).join(rows, on="ts", how="inner")
    assert at.height == rows.height
    assert (at["truth"] != 0).all()  # no signal where the future is unknown or flat
    hits = float((at["signal"] == at["truth"]).mean())  # type: ignore[arg-type]
    # About 1,990 signals: the standard error of the share is at most 0.0112.
    assert hits == pytest.approx(hit_rate, abs=0.035)
    eligible = int((truth != 0).sum())
    assert rows.height / eligible == pytest.approx(0.5, abs=0.035)


def test_random_signals_density_and_independence_from_prices(btc: pl.DataFrame) -> None:
    density = 0.05
    rows = random_signals(btc["ts"], density, np.random.default_rng(11))
    assert set(rows["signal"].unique().to_list()) == {-1, 1}
    # 4,000 bars at 5 %: 200 expected, standard deviation 13.8.
    assert abs(rows.height - density * btc.height) < 4 * 13.8
    # Reproduced from its seed (the generator sees only timestamps, never a price).
    assert rows.equals(random_signals(btc["ts"], density, np.random.default_rng(11)))
    # No relation to the next day's move on these bars.
    truth = forward_sign(btc["close"].to_numpy(), 24)
    joined = (
        btc.with_columns(pl.Series("truth", truth)).join(rows, on="ts").filter(pl.col("truth") != 0)
    )
    agree = float((joined["signal"] == joined["truth"]).mean())  # type: ignore[arg-type]
    assert agree == pytest.approx(0.5, abs=0.12)


def _log_returns(frame: pl.DataFrame) -> np.ndarray:
    close = frame["close"].to_numpy()
    return np.log(close[1:] / close[:-1])


@pytest.mark.parametrize("block", [1, 24, 168])
def test_block_shuffle_keeps_bar_shapes_and_the_return_multiset(
    btc: pl.DataFrame, block: int
) -> None:
    shuffled = block_shuffled_bars(btc, block, np.random.default_rng(5))
    assert shuffled.columns == btc.columns and shuffled.height == btc.height
    assert shuffled["ts"].equals(btc["ts"])
    o, h, lo, c = (shuffled[k].to_numpy() for k in ("open", "high", "low", "close"))
    assert (h >= np.maximum(o, c)).all() and (lo <= np.minimum(o, c)).all() and (lo > 0).all()
    before, after = _log_returns(btc), _log_returns(shuffled)
    np.testing.assert_allclose(np.sort(after), np.sort(before), rtol=0, atol=1e-9)
    assert not np.allclose(after, before)  # the order really changed
    assert sorted(shuffled["volume"].to_list()) == sorted(btc["volume"].to_list())
    # Each bar keeps its range relative to its open.
    np.testing.assert_allclose(
        np.sort(h / o), np.sort(btc["high"].to_numpy() / btc["open"].to_numpy()), rtol=1e-12
    )


def test_block_shuffle_moves_whole_blocks(btc: pl.DataFrame) -> None:
    block = 50
    bars = btc.head(3951)  # 3,950 returns: whole blocks only, so every block starts aligned
    shuffled = block_shuffled_bars(bars, block, np.random.default_rng(9))
    before, after = _log_returns(bars), _log_returns(shuffled)
    # Return k of the shuffled bars is return k of some block of the original: every run of
    # ``block`` returns starting at a multiple of the block appears unchanged in the original.
    for start in range(0, after.shape[0], block):
        run = after[start : start + block]
        where = np.flatnonzero(np.isclose(before, run[0], rtol=0, atol=1e-12))
        assert any(
            np.allclose(before[w : w + block], run, rtol=0, atol=1e-9)
            for w in where
            if w % block == 0
        )


def test_block_shuffle_keeps_missing_volume_missing(eur: pl.DataFrame) -> None:
    shuffled = block_shuffled_bars(eur, 24, np.random.default_rng(1))
    assert shuffled["volume"].null_count() == eur["volume"].null_count() == eur.height
    assert math.isclose(
        float(np.sum(_log_returns(shuffled))), float(np.sum(_log_returns(eur))), abs_tol=1e-9
    )
