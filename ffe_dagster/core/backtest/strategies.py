"""Entry-signal strategies.

A strategy turns a segment of bars into signals in {-1, 0, +1} per bar: +1 asks to be long from this
bar's close, -1 to be short. Direction filtering (long-only, short-only) is the backtest's job, so
one strategy serves every curriculum level. Signals fire on the bar where a condition starts (a
crossing), not on every bar where it holds, so a position closed by a stop is not re-opened at once.

Indicators are memoized per segment in an ``IndicatorCache``: trials that share an indicator window
reuse it, whatever their other parameters.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numba
import numpy as np
import numpy.typing as npt
import polars as pl

from ffe_dagster.core.backtest.metrics import FloatArray

Signals = npt.NDArray[np.int8]


class Bars(Protocol):
    """What a strategy reads: bar open times and prices of one contiguous segment."""

    @property
    def ts(self) -> npt.NDArray[np.datetime64]: ...
    @property
    def high(self) -> FloatArray: ...
    @property
    def low(self) -> FloatArray: ...
    @property
    def close(self) -> FloatArray: ...


def rolling_mean(values: FloatArray, window: int) -> FloatArray:
    """Trailing simple moving average; the first ``window - 1`` values are NaN."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    out = np.full(values.shape, np.nan)
    if values.size < window:
        return out
    csum = np.cumsum(np.concatenate(([0.0], values)))
    out[window - 1 :] = (csum[window:] - csum[:-window]) / window
    return out


@numba.njit(cache=True)
def _rolling_extreme(values: FloatArray, window: int, use_max: bool) -> FloatArray:
    out = np.full(values.shape[0], np.nan)
    for i in range(window - 1, values.shape[0]):
        best = values[i - window + 1]
        for j in range(i - window + 2, i + 1):
            v = values[j]
            if (use_max and v > best) or (not use_max and v < best):
                best = v
        out[i] = best
    return out


def rolling_max(values: FloatArray, window: int) -> FloatArray:
    """Trailing maximum over ``window`` bars including the current one; NaN before it fills."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    return _rolling_extreme(values, window, True)


def rolling_min(values: FloatArray, window: int) -> FloatArray:
    """Trailing minimum over ``window`` bars including the current one; NaN before it fills."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    return _rolling_extreme(values, window, False)


@numba.njit(cache=True)
def _wilder_rsi(close: FloatArray, period: int) -> FloatArray:
    out = np.full(close.shape[0], np.nan)
    if close.shape[0] <= period:
        return out
    gain = 0.0
    loss = 0.0
    for i in range(1, period + 1):
        change = close[i] - close[i - 1]
        if change > 0:
            gain += change
        else:
            loss -= change
    gain /= period
    loss /= period
    out[period] = 100.0 if loss == 0 else 100.0 - 100.0 / (1.0 + gain / loss)
    for i in range(period + 1, close.shape[0]):
        change = close[i] - close[i - 1]
        up = change if change > 0 else 0.0
        down = -change if change < 0 else 0.0
        gain = (gain * (period - 1) + up) / period
        loss = (loss * (period - 1) + down) / period
        out[i] = 100.0 if loss == 0 else 100.0 - 100.0 / (1.0 + gain / loss)
    return out


def rsi(close: FloatArray, period: int) -> FloatArray:
    """Wilder's relative strength index (0..100); NaN for the first ``period`` bars.

    The first average gain and loss are simple means over ``period`` changes, then smoothed as
    ``avg = (avg * (period - 1) + change) / period``. A bar with no average loss reads 100.
    """
    if period < 2:
        raise ValueError(f"RSI period must be >= 2, got {period}")
    return _wilder_rsi(close, period)


@dataclass
class IndicatorCache:
    """Indicators of one segment, each computed once per distinct window."""

    bars: Bars
    _store: dict[tuple[str, int], FloatArray] = field(default_factory=dict)

    def _get(self, key: tuple[str, int], make: Callable[[], FloatArray]) -> FloatArray:
        found = self._store.get(key)
        if found is None:
            found = make()
            self._store[key] = found
        return found

    def sma(self, window: int) -> FloatArray:
        """Simple moving average of the close."""
        return self._get(("sma", window), lambda: rolling_mean(self.bars.close, window))

    def highest_high(self, window: int) -> FloatArray:
        """Highest high of the ``window`` bars before this one (this bar excluded)."""
        return self._get(("hh", window), lambda: _shift(rolling_max(self.bars.high, window)))

    def lowest_low(self, window: int) -> FloatArray:
        """Lowest low of the ``window`` bars before this one (this bar excluded)."""
        return self._get(("ll", window), lambda: _shift(rolling_min(self.bars.low, window)))

    def rsi(self, period: int) -> FloatArray:
        """Wilder's RSI of the close."""
        return self._get(("rsi", period), lambda: rsi(self.bars.close, period))


def _shift(values: FloatArray) -> FloatArray:
    out = np.full(values.shape, np.nan)
    out[1:] = values[:-1]
    return out


def _starts(
    condition: npt.NDArray[np.bool_], valid: npt.NDArray[np.bool_]
) -> npt.NDArray[np.bool_]:
    """True on bars where ``condition`` holds and did not hold on the previous valid bar."""
    prev = np.concatenate(([False], condition[:-1]))
    prev_valid = np.concatenate(([False], valid[:-1]))
    return condition & valid & prev_valid & ~prev


def sma_crossover_signals(cache: IndicatorCache, params: Mapping[str, float]) -> Signals:
    """+1 on the bar where the fast SMA crosses above the slow one, -1 where it crosses below.

    Parameters: ``fast_window`` and ``slow_window`` (bars). The slow window is forced above the
    fast one, because a crossover of a window with itself never fires.
    """
    fast = int(params["fast_window"])
    slow = max(int(params["slow_window"]), fast + 1)
    diff = cache.sma(fast) - cache.sma(slow)
    valid = ~np.isnan(diff)
    signals = np.zeros(diff.shape, dtype=np.int8)
    signals[_starts(diff > 0.0, valid)] = 1
    signals[_starts(diff <= 0.0, valid)] = -1
    return signals


def donchian_breakout_signals(cache: IndicatorCache, params: Mapping[str, float]) -> Signals:
    """+1 when the close breaks above the highest high of the previous ``channel_window`` bars,
    -1 when it breaks below their lowest low (on the first bar of each breakout)."""
    window = int(params["channel_window"])
    upper = cache.highest_high(window)
    lower = cache.lowest_low(window)
    close = cache.bars.close
    valid = ~np.isnan(upper)
    signals = np.zeros(close.shape, dtype=np.int8)
    signals[_starts(close > upper, valid)] = 1
    signals[_starts(close < lower, valid)] = -1
    return signals


def rsi_reversion_signals(cache: IndicatorCache, params: Mapping[str, float]) -> Signals:
    """Mean reversion on Wilder's RSI: +1 when RSI climbs back above ``rsi_lower`` (leaving
    oversold), -1 when it falls back below ``rsi_upper`` (leaving overbought)."""
    value = cache.rsi(int(params["rsi_period"]))
    lower = float(params["rsi_lower"])
    upper = float(params["rsi_upper"])
    valid = ~np.isnan(value)
    signals = np.zeros(value.shape, dtype=np.int8)
    signals[_starts(value > lower, valid)] = 1
    signals[_starts(value < upper, valid)] = -1
    return signals


SignalFn = Callable[[IndicatorCache, Mapping[str, float]], Signals]


@dataclass(frozen=True, slots=True)
class EntryStrategy:
    """A named signal function and the names of the parameters it reads."""

    name: str
    signal_fn: SignalFn
    param_names: tuple[str, ...]

    def signals(self, cache: IndicatorCache, params: Mapping[str, float]) -> Signals:
        """Signals for the cached segment with the strategy's parameters picked from ``params``."""
        return self.signal_fn(cache, {k: params[k] for k in self.param_names})

    def signals_for(self, bars: Bars, params: Mapping[str, float]) -> Signals:
        """Signals for ``bars`` without a shared cache (one-off evaluations)."""
        return self.signals(IndicatorCache(bars), params)


@dataclass(frozen=True, slots=True, eq=False)
class FileSignals:
    """Signals another system produced: a frame of ``ts`` (bar open, UTC) -> ``signal``, read
    from its file by ``ffe_dagster.sources.files.read_signal_file``; ``source`` names the file
    in every error. Build it with :meth:`checked`.

    Values must be -1, 0 or +1. A bar with no row in the file has no signal; a row with no bar is
    ignored. One file may hold several instruments in an ``instrument`` column; without it, the
    same signals apply to every instrument. An optional ``known_at`` column (UTC) says when the
    producing system knew each signal; the look-ahead check (``core.study.lookahead``) needs it to
    be no later than the close of the bar ``ts`` opens, where the engine fills the signal.
    """

    frame: pl.DataFrame
    source: str = "signal file"

    @classmethod
    def checked(cls, frame: pl.DataFrame, source: str) -> "FileSignals":
        """``frame`` checked and typed (UTC microsecond times, int8 signals); a clear error
        names ``source`` and what is wrong."""
        missing = {"ts", "signal"} - set(frame.columns)
        if missing:
            raise ValueError(f"signal file {source} lacks column(s) {sorted(missing)}")
        bad = frame.filter(~pl.col("signal").is_in([-1, 0, 1]) | pl.col("signal").is_null())
        if bad.height:
            raise ValueError(
                f"signal file {source}: {bad.height} row(s) with a signal outside "
                f"{{-1, 0, 1}}, first at ts={bad['ts'][0]}"
            )
        key = ["instrument", "ts"] if "instrument" in frame.columns else ["ts"]
        dupes = frame.filter(frame.select(key).is_duplicated())
        if dupes.height:
            raise ValueError(
                f"signal file {source}: {dupes.height} row(s) share a timestamp, first at "
                f"ts={dupes['ts'][0]}; each bar must have at most one signal"
            )
        if "known_at" in frame.columns and frame["known_at"].null_count():
            raise ValueError(f"signal file {source}: known_at is empty on some rows")
        casts = [pl.col("ts").cast(pl.Datetime("us", "UTC")), pl.col("signal").cast(pl.Int8)]
        if "known_at" in frame.columns:
            casts.append(pl.col("known_at").cast(pl.Datetime("us", "UTC")))
        return cls(frame.with_columns(casts), source)

    def strategy(self, instrument_of: Callable[[Bars], str] | None = None) -> EntryStrategy:
        """An ``EntryStrategy`` that aligns the file's signals to each segment's bars."""
        frame = self.frame
        by_instrument: dict[str | None, dict[np.datetime64, int]] = {}
        keys = frame["instrument"].to_list() if "instrument" in frame.columns else None
        stamps = frame["ts"].dt.replace_time_zone(None).to_numpy()
        values = frame["signal"].to_numpy()
        for k, (stamp, value) in enumerate(zip(stamps, values, strict=True)):
            bucket = by_instrument.setdefault(keys[k] if keys else None, {})
            bucket[stamp] = int(value)

        def signal_fn(cache: IndicatorCache, _params: Mapping[str, float]) -> Signals:
            name = instrument_of(cache.bars) if (instrument_of and keys) else None
            table = by_instrument.get(name, {})
            ts = cache.bars.ts.astype("datetime64[us]")
            return np.fromiter((table.get(t, 0) for t in ts), dtype=np.int8, count=ts.size)

        return EntryStrategy(name="file_signals", signal_fn=signal_fn, param_names=())


STRATEGIES: Mapping[str, EntryStrategy] = {
    "sma_crossover": EntryStrategy(
        name="sma_crossover",
        signal_fn=sma_crossover_signals,
        param_names=("fast_window", "slow_window"),
    ),
    "donchian_breakout": EntryStrategy(
        name="donchian_breakout",
        signal_fn=donchian_breakout_signals,
        param_names=("channel_window",),
    ),
    "rsi_reversion": EntryStrategy(
        name="rsi_reversion",
        signal_fn=rsi_reversion_signals,
        param_names=("rsi_period", "rsi_lower", "rsi_upper"),
    ),
}


def get_strategy(name: str, *, signals: FileSignals | None = None) -> EntryStrategy:
    """The strategy called ``name``: a built-in one, or ``file_signals`` trading ``signals``
    (its file read by ``ffe_dagster.sources.files.read_signal_file``). A clear error lists the
    known names."""
    if name == "file_signals":
        if signals is None:
            raise ValueError(
                "strategy 'file_signals' needs a signal file (strategy_options.path), read by "
                "ffe_dagster.sources.files.read_signal_file"
            )
        return signals.strategy(lambda bars: getattr(bars, "instrument", ""))
    try:
        return STRATEGIES[name]
    except KeyError:
        known = [*sorted(STRATEGIES), "file_signals"]
        raise ValueError(f"unknown entry strategy {name!r}; known: {known}") from None
