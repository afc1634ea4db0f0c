"""A lean numba backtest kernel that reproduces vectorbt's ``Portfolio.from_signals``.

vectorbt is the reference (``reference.simulate``), but one ``from_signals`` call plus its stats
costs far more than the simulation itself, and broadcasting many parameter sets into one call
exhausts memory. This kernel runs the same order logic bar by bar for exactly the configuration
``reference.simulate`` uses:

- one order per bar; an entry fills at the bar's close (``price=inf``) plus slippage, sized as a
  fixed cash value converted to units at the close (``size_type="value"``, ``val_price=inf``);
- stops are armed at the entry bar's close (``stop_entry_price="close"``) and checked from the next
  bar on: stop loss first (trailing when asked, its reference price updated after the check), then
  take profit; a bar that opens beyond the stop fills at the open; stop exits pay slippage
  (``stop_exit_price="stopmarket"``) and take precedence over that bar's signal;
- an opposite entry reverses the position in one order (``upon_opposite_entry="reverse"``, no
  accumulation); fees are a fraction of traded value per side; cash is never borrowed for longs.

Trades follow vectorbt's exit-trade records (fees of a reversing order split by size), and metrics
are streamed in the loop. ``tests/core/test_engine.py`` checks trades and metrics against vectorbt
on real bars. The floating-point guards and fill rules come from ``vbt_compat``, which
copies vectorbt's tolerances so both round the same way.
"""

import math

import numba
import numpy as np
import numpy.typing as npt

from ffe_dagster.core.backtest.metrics import Metrics, profit_factor_of
from ffe_dagster.core.backtest.vbt_compat import add, is_close, stop_price, trade_pnl

DIR_LONG = 0
DIR_SHORT = 1
DIR_BOTH = 2

# Columns of the per-trial parameter matrix of ``evaluate_batch``.
P_SIZE_VALUE = 0  # cash value of each new position
P_SL = 1  # stop fraction (fixed or trailing); NaN = no stop loss
P_TRAIL = 2  # 1.0 when the stop trails the best price since entry
P_TP = 3  # take-profit fraction; NaN = no take profit
P_DIRECTION = 4  # DIR_LONG, DIR_SHORT or DIR_BOTH
P_FEES = 5  # fee fraction per side
P_SLIPPAGE = 6  # slippage fraction per side
P_SIGNAL_ROW = 7  # row of the signal matrix this trial trades
N_PARAMS = 8

# Columns of the per-trial statistics that ``evaluate_batch`` returns.
S_BARS = 0  # number of per-bar returns
S_SUM = 1  # sum of returns
S_SUM2 = 2  # sum of squared returns
S_DOWN2 = 3  # sum of min(r, 0)^2
S_EQUITY = 4  # compounded equity multiple over all segments in order
S_PEAK = 5  # running peak of that equity (starts at 1)
S_MAX_DD = 6  # largest 1 - equity / peak
S_CLOSED = 7  # closed trades
S_WINS = 8  # closed trades with pnl > 0
S_GROSS_PROFIT = 9
S_GROSS_LOSS = 10  # as a positive number
S_CLOSED_BARS = 11  # sum of exit_idx - entry_idx over closed trades
S_MARKET_BARS = 12  # the same over all trades, open ones up to the last bar
N_STATS = 13

# Columns of a recorded trade (``simulate_segment`` with a trade buffer).
T_ENTRY_IDX = 0
T_EXIT_IDX = 1
T_SIZE = 2
T_ENTRY_PRICE = 3
T_EXIT_PRICE = 4
T_ENTRY_FEES = 5
T_EXIT_FEES = 6
T_PNL = 7
T_DIRECTION = 8  # 0 long, 1 short
T_CLOSED = 9  # 1.0 closed, 0.0 still open at the last bar
N_TRADE_FIELDS = 10

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
SignalArray = npt.NDArray[np.int8]


@numba.njit(cache=True)
def simulate_segment(  # noqa: C901 - one loop on purpose: numba keeps its state in registers
    open_: FloatArray,
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    signals: SignalArray,
    lo: int,
    hi: int,
    params: FloatArray,
    init_cash: float,
    stats: FloatArray,
    trades: FloatArray,
    returns_out: FloatArray,
) -> int:
    """Simulate bars ``[lo, hi)`` from flat with ``init_cash``; fold results into ``stats``.

    ``params`` is one row of the parameter matrix (see ``P_*``). When ``trades`` has rows, every
    trade (closed, then the open one if any) is written there with indices relative to ``lo``; when
    ``returns_out`` has ``hi - lo`` elements the per-bar returns are written there. Returns the
    number of trades (closed and open).
    """
    size_value = params[P_SIZE_VALUE]
    sl_stop = params[P_SL]
    trail = params[P_TRAIL] > 0.5
    tp_stop = params[P_TP]
    direction = int(params[P_DIRECTION])
    fees = params[P_FEES]
    slippage = params[P_SLIPPAGE]
    record = trades.shape[0] > 0
    keep_returns = returns_out.shape[0] == hi - lo

    cash = init_cash
    position = 0.0
    prev_value = init_cash
    sl_active = False
    tp_active = False
    sl_ref = np.nan
    tp_ref = np.nan
    # The open trade, as vectorbt's exit-trade aggregation sees it.
    in_trade = False
    t_short = False
    t_entry_idx = 0
    t_size = 0.0
    t_price = 0.0
    t_fees = 0.0
    n_trades = 0
    # Return statistics live in locals (registers) during the loop and go back to ``stats`` once.
    n_bars = stats[S_BARS]
    sum_r = stats[S_SUM]
    sum_r2 = stats[S_SUM2]
    down2 = stats[S_DOWN2]
    equity = stats[S_EQUITY]
    peak = stats[S_PEAK]
    max_dd = stats[S_MAX_DD]

    for i in range(lo, hi):
        c = close[i]
        price = c
        slip = slippage
        order = 0.0  # units to trade, signed; 0 = no order
        close_only = False  # the order may only reduce the position (exit or stop)
        from_flat_value = False  # the order is a cash value, converted at this close

        stop_fill = np.nan
        if sl_active or tp_active:
            o = open_[i]
            h = high[i]
            lw = low[i]
            if sl_active:
                stop_fill = stop_price(position, sl_ref, sl_stop, o, lw, h, True)
            if math.isnan(stop_fill) and tp_active:
                stop_fill = stop_price(position, tp_ref, tp_stop, o, lw, h, False)
            if sl_active and trail:
                sl_ref = max(sl_ref, h) if position > 0 else min(sl_ref, lw)

        if not math.isnan(stop_fill):
            price = stop_fill
            order = -position
            close_only = True
        else:
            s = signals[i]
            long_entry = False
            long_exit = False
            short_entry = False
            short_exit = False
            if direction == DIR_LONG:
                long_entry = s == 1
                long_exit = s == -1
            elif direction == DIR_SHORT:
                short_entry = s == -1
                short_exit = s == 1
            else:
                long_entry = s == 1
                short_entry = s == -1
            if position > 0:
                if short_entry:
                    order = -abs(position) - size_value / c
                elif long_exit:
                    order = -abs(position)
                    close_only = True
            elif position < 0:
                if long_entry:
                    order = abs(position) + size_value / c
                elif short_exit:
                    order = abs(position)
                    close_only = True
            else:
                if long_entry:
                    order = size_value
                    from_flat_value = True
                elif short_entry:
                    order = -size_value
                    from_flat_value = True

        if order != 0.0:
            before = position
            # vectorbt snaps near-zero state before executing an order.
            if is_close(cash, 0.0):
                cash = 0.0
            if is_close(position, 0.0):
                position = 0.0
            if from_flat_value:
                order = order / c
            filled = False
            fill_size = 0.0
            fill_price = 0.0
            fill_fees = 0.0
            if order > 0:
                adj_price = price * (1 + slip)
                size = order
                ok = True
                if close_only:
                    # Closing a short: at most the open size.
                    if position == 0:
                        ok = False
                    size = min(-position, size)
                elif cash == 0:
                    ok = False
                if ok and size != 0:
                    req_cash = size * adj_price
                    req_fees = req_cash * fees
                    total = req_cash + req_fees
                    if is_close(total, cash) or total < cash:
                        fill_size = size
                        fill_fees = req_fees
                        spend = total
                    else:
                        max_req = cash / (1 + fees)
                        if max_req <= 0:
                            ok = False
                        fill_size = max_req / adj_price
                        fill_fees = cash - max_req
                        spend = cash
                    if ok and not is_close(size, 0.0):
                        cash = add(cash, -spend)
                        position = add(position, fill_size)
                        fill_price = adj_price
                        filled = True
            else:
                adj_price = price * (1 - slip)
                size = -order
                ok = True
                if close_only:
                    if position == 0:
                        ok = False
                    size = min(position, size)
                if ok and not is_close(size, 0.0):
                    acq = size * adj_price
                    paid = acq * fees
                    net = add(acq, -paid)
                    if net >= 0:
                        cash = cash + net
                        position = add(position, -size)
                        fill_size = size
                        fill_price = adj_price
                        fill_fees = paid
                        filled = True

            if filled:
                buy = order > 0
                # Exit-trade bookkeeping (vectorbt's get_exit_trades_nb).
                if not in_trade:
                    in_trade = True
                    t_short = not buy
                    t_entry_idx = i
                    t_size = fill_size
                    t_price = fill_price
                    t_fees = fill_fees
                elif buy == t_short:
                    if is_close(fill_size, t_size) or fill_size < t_size:
                        exit_size = t_size if is_close(fill_size, t_size) else fill_size
                        entry_fees = exit_size / t_size * t_fees
                        pnl = trade_pnl(
                            exit_size, t_price, fill_price, entry_fees, fill_fees, t_short
                        )
                        _close_trade(
                            stats, trades, record, n_trades, lo, t_entry_idx, i, exit_size,
                            t_price, fill_price, entry_fees, fill_fees, pnl, t_short,
                        )  # fmt: skip
                        n_trades += 1
                        in_trade = False
                    else:
                        cl_fees = t_size / fill_size * fill_fees
                        pnl = trade_pnl(t_size, t_price, fill_price, t_fees, cl_fees, t_short)
                        _close_trade(
                            stats, trades, record, n_trades, lo, t_entry_idx, i, t_size,
                            t_price, fill_price, t_fees, cl_fees, pnl, t_short,
                        )  # fmt: skip
                        n_trades += 1
                        t_size = fill_size - t_size
                        t_price = fill_price
                        t_fees = fill_fees - cl_fees
                        t_entry_idx = i
                        t_short = not t_short

                # Stops: cleared when flat, armed at this close when opened or reversed.
                if position == 0:
                    sl_active = False
                    tp_active = False
                elif before == 0 or np.sign(position) != np.sign(before):
                    sl_active = not math.isnan(sl_stop)
                    tp_active = not math.isnan(tp_stop)
                    sl_ref = c
                    tp_ref = c

        n_bars += 1.0
        if position == 0.0 and order == 0.0:
            # Flat and idle: the value did not move, the return is exactly 0.
            if keep_returns:
                returns_out[i - lo] = 0.0
            continue
        value = cash + position * c if position != 0 else cash
        r = (value - prev_value) / prev_value
        prev_value = value
        if keep_returns:
            returns_out[i - lo] = r
        sum_r += r
        sum_r2 += r * r
        equity *= 1.0 + r
        # Branch-free on purpose: the sign of a return is a coin flip the CPU cannot predict.
        neg = min(r, 0.0)
        down2 += neg * neg
        peak = max(peak, equity)
        # Divide only when the drawdown deepens (rare, so the branch is predictable).
        if equity < peak * (1.0 - max_dd):
            max_dd = max(max_dd, 1.0 - equity / peak)

    stats[S_BARS] = n_bars
    stats[S_SUM] = sum_r
    stats[S_SUM2] = sum_r2
    stats[S_DOWN2] = down2
    stats[S_EQUITY] = equity
    stats[S_PEAK] = peak
    stats[S_MAX_DD] = max_dd

    if in_trade:
        last = hi - 1
        stats[S_MARKET_BARS] += last - t_entry_idx
        if record:
            pnl = trade_pnl(t_size, t_price, close[last], t_fees, 0.0, t_short)
            _write_trade(
                trades, n_trades, lo, t_entry_idx, last, t_size, t_price, close[last],
                t_fees, 0.0, pnl, t_short, False,
            )  # fmt: skip
        n_trades += 1
    return n_trades


@numba.njit(cache=True, inline="always")
def _write_trade(
    trades: FloatArray,
    k: int,
    lo: int,
    entry_idx: int,
    exit_idx: int,
    size: float,
    entry_price: float,
    exit_price: float,
    entry_fees: float,
    exit_fees: float,
    pnl: float,
    short: bool,
    closed: bool,
) -> None:
    if k >= trades.shape[0]:
        return
    trades[k, T_ENTRY_IDX] = entry_idx - lo
    trades[k, T_EXIT_IDX] = exit_idx - lo
    trades[k, T_SIZE] = size
    trades[k, T_ENTRY_PRICE] = entry_price
    trades[k, T_EXIT_PRICE] = exit_price
    trades[k, T_ENTRY_FEES] = entry_fees
    trades[k, T_EXIT_FEES] = exit_fees
    trades[k, T_PNL] = pnl
    trades[k, T_DIRECTION] = 1.0 if short else 0.0
    trades[k, T_CLOSED] = 1.0 if closed else 0.0


@numba.njit(cache=True, inline="always")
def _close_trade(
    stats: FloatArray,
    trades: FloatArray,
    record: bool,
    k: int,
    lo: int,
    entry_idx: int,
    exit_idx: int,
    size: float,
    entry_price: float,
    exit_price: float,
    entry_fees: float,
    exit_fees: float,
    pnl: float,
    short: bool,
) -> None:
    stats[S_CLOSED] += 1.0
    if pnl > 0:
        stats[S_WINS] += 1.0
        stats[S_GROSS_PROFIT] += pnl
    elif pnl < 0:
        stats[S_GROSS_LOSS] -= pnl
    stats[S_CLOSED_BARS] += exit_idx - entry_idx
    stats[S_MARKET_BARS] += exit_idx - entry_idx
    if record:
        _write_trade(
            trades, k, lo, entry_idx, exit_idx, size, entry_price, exit_price,
            entry_fees, exit_fees, pnl, short, True,
        )  # fmt: skip


@numba.njit(cache=True, inline="always")
def _new_stats(out: FloatArray) -> None:
    out[:] = 0.0
    out[S_EQUITY] = 1.0
    out[S_PEAK] = 1.0


@numba.njit(cache=True, parallel=True)
def evaluate_batch(
    open_: FloatArray,
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    signals: npt.NDArray[np.int8],
    bounds: IntArray,
    params: FloatArray,
    init_cash: float,
) -> FloatArray:
    """Statistics (``S_*`` columns) of many parameter sets over the same segments.

    ``open_`` .. ``close`` hold every segment back to back; ``bounds`` has one ``[lo, hi)`` row per
    segment (each starts flat with ``init_cash``; statistics pool over segments in order);
    ``signals`` has one row per distinct set of strategy parameters, selected by each trial's
    ``P_SIGNAL_ROW``. Trials run in parallel over the available cores.
    """
    n_trials = params.shape[0]
    out = np.empty((n_trials, N_STATS), dtype=np.float64)
    no_trades = np.empty((0, N_TRADE_FIELDS), dtype=np.float64)
    no_returns = np.empty(0, dtype=np.float64)
    for t in numba.prange(n_trials):
        stats = out[t]
        _new_stats(stats)
        row = int(params[t, P_SIGNAL_ROW])
        for s in range(bounds.shape[0]):
            simulate_segment(
                open_, high, low, close, signals[row], bounds[s, 0], bounds[s, 1],
                params[t], init_cash, stats, no_trades, no_returns,
            )  # fmt: skip
    return out


def new_stats() -> FloatArray:
    """An empty statistics row (nothing simulated yet)."""
    out = np.zeros(N_STATS, dtype=np.float64)
    out[S_EQUITY] = 1.0
    out[S_PEAK] = 1.0
    return out


def stats_to_metrics(stats: FloatArray, periods_per_year: float) -> Metrics:
    """The ``Metrics`` of one statistics row, with the same definitions as ``metrics.py``."""
    n = float(stats[S_BARS])
    sharpe = 0.0
    sortino = 0.0
    if n >= 2:
        mean = stats[S_SUM] / n
        # Sum of squares minus n * mean^2: per-bar returns have |mean| << rms, so this loses
        # nothing measurable against a two-pass variance (checked against numpy in the tests).
        var = max((stats[S_SUM2] - n * mean * mean) / (n - 1.0), 0.0)
        std = math.sqrt(var)
        if std > 0.0 and math.isfinite(std):
            sharpe = mean / std * math.sqrt(periods_per_year)
        downside = math.sqrt(stats[S_DOWN2] / n)
        if downside > 0.0:
            sortino = mean / downside * math.sqrt(periods_per_year)
    closed = float(stats[S_CLOSED])
    gains = float(stats[S_GROSS_PROFIT])
    losses = float(stats[S_GROSS_LOSS])
    return Metrics(
        sharpe=float(sharpe),
        sortino=float(sortino),
        max_drawdown_pct=float(stats[S_MAX_DD] * 100.0),
        win_rate_pct=float(stats[S_WINS] / closed * 100.0) if closed else 0.0,
        profit_factor=profit_factor_of(gains, losses),
        total_return_pct=float((stats[S_EQUITY] - 1.0) * 100.0),
        n_trades=int(closed),
        avg_trade_bars=float(stats[S_CLOSED_BARS] / closed) if closed else 0.0,
        exposure_pct=float(stats[S_MARKET_BARS] / n * 100.0) if n else 0.0,
    )
