"""Promotion decisions per regime: the COLD, WARM and LIMITED gates, the safety limits, and the
paper and live performance they judge (SPEC section 5).

A candidate climbs COLD -> WARM -> LIMITED -> FULL across cycles. Each gate returns a
``GateDecision`` whose every threshold is a ``GateCheck`` with its own reason, and whose outcome is
PASS, FAIL or WAIT: a stage that has not seen enough bars, hours or trades to judge WAITS (the
candidate stays where it is) instead of failing. This module is pure; the registry keeps the
stage of every version and ``assets/promotion.py`` runs the gates once per cycle.

Conventions every gate shares:

- *Paper* performance is the numba engine on bars (``paper_performance``): the account starts
  at ``INIT_CASH`` (10,000 USD) per instrument, so dollar limits are measured in that account.
  *Live* performance comes from the results the trading system reports (``live_performance``).
- "Better than the current parameters by x %" (WARM, LIMITED) compares both sets on the same bars
  or hours. When the current Sharpe there is zero or negative, a percentage of it means nothing
  (1.10 x -1.0 = -1.1 would let a worse set through), so the candidate then needs a positive
  Sharpe. Without a current version the baseline is staying flat: Sharpe 0, win rate 0 %.
- Safety limits: the loss limits (daily loss, drawdown) are judged on any number of trades,
  because the money is lost whatever the sample size; the statistical ones (win rate, Sharpe
  degradation) only from ``min_trades`` trades on. Until then a stage that can wait, waits.
- Thresholds compare with a relative tolerance of 1e-9, so a value computed in floating point
  that equals its boundary on paper (1.1 x 1.0) passes.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

import numpy as np
import polars as pl

from ffe_dagster.core import engine
from ffe_dagster.core.backtest import INIT_CASH, CostModel, Direction, engine_row
from ffe_dagster.core.curriculum import bars_to_segment
from ffe_dagster.core.evaluation import MIN_PERIOD_BARS, Params, trade_params
from ffe_dagster.core.strategies import EntryStrategy

_REL_TOL = 1e-9
HOURS_PER_DAY = 24.0


class PromotionRegime(StrEnum):
    """The sets the trading system switches between."""

    BULL = "BULL"
    BEAR = "BEAR"
    SIDEWAYS = "SIDEWAYS"
    DEFAULT = "DEFAULT"


class Stage(StrEnum):
    """Where a version stands; FULL is the regime's current set."""

    COLD = "COLD"
    WARM = "WARM"
    LIMITED = "LIMITED"
    FULL = "FULL"


class Outcome(StrEnum):
    """A gate's verdict: move on, drop the candidate, or look again next cycle."""

    PASS = "pass"
    FAIL = "fail"
    WAIT = "wait"


@dataclass(frozen=True, slots=True)
class ColdGateConfig:
    """COLD: a backtest on recent bars no study saw (SPEC section 5)."""

    window_days: tuple[int, ...] = (7, 14, 30)
    min_sharpe: float = 0.5
    min_win_rate_pct: float = 40.0
    min_trades: int = 20


@dataclass(frozen=True, slots=True)
class WarmGateConfig:
    """WARM: paper trading on bars that arrived after the candidate was made."""

    min_hours: float = 4.0
    max_wait_hours: float = 30 * HOURS_PER_DAY
    sharpe_uplift_pct: float = 10.0
    win_rate_margin_pts: float = 2.0
    max_drawdown_pct: float = 8.0

    def __post_init__(self) -> None:
        if self.max_wait_hours < self.min_hours:
            raise ValueError("WARM max_wait_hours must be at least min_hours")


@dataclass(frozen=True, slots=True)
class LimitedGateConfig:
    """LIMITED: live trading with a share of the capital, judged on reported results.

    The trading system applies ``capital_fraction`` (it reads it from the export); the gate is
    judged once ``min_hours`` have passed since the version entered LIMITED.
    """

    capital_fraction: float = 0.10
    min_hours: float = 24.0
    max_wait_hours: float = 7 * HOURS_PER_DAY
    sharpe_uplift_pct: float = 15.0
    min_winning_trades: int = 10
    max_realized_loss_usd: float = 5.0

    def __post_init__(self) -> None:
        if not 0.0 < self.capital_fraction <= 1.0:
            raise ValueError("LIMITED capital_fraction must be in (0, 1]")
        if self.max_wait_hours < self.min_hours:
            raise ValueError("LIMITED max_wait_hours must be at least min_hours")


@dataclass(frozen=True, slots=True)
class SafetyLimits:
    """Limits checked at every stage and on the current set after its promotion."""

    max_daily_loss_usd: float = 5.0
    max_sharpe_degradation_pct: float = 30.0
    max_drawdown_pct: float = 8.0
    min_win_rate_pct: float = 40.0
    min_trades: int = 20


@dataclass(frozen=True, slots=True)
class PromotionConfig:
    """Every threshold of the promotion, one object per stage."""

    cold: ColdGateConfig = field(default_factory=ColdGateConfig)
    warm: WarmGateConfig = field(default_factory=WarmGateConfig)
    limited: LimitedGateConfig = field(default_factory=LimitedGateConfig)
    safety: SafetyLimits = field(default_factory=SafetyLimits)


@dataclass(frozen=True, slots=True)
class GateCheck:
    """One threshold of a gate, measured. ``waiting`` means it could not be judged yet."""

    name: str
    value: float
    threshold: float
    passed: bool
    reason: str
    waiting: bool = False


@dataclass(frozen=True, slots=True)
class Performance:
    """What one parameter set did over a window, on paper (engine) or live (reported)."""

    sharpe: float
    win_rate_pct: float
    max_drawdown_pct: float
    n_trades: int
    n_wins: int
    pnl_usd: float
    worst_day_pnl_usd: float  # the worst UTC day's PnL; 0.0 without any day
    hours: float  # how much time the window covers
    extra: Mapping[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        """A flat ``name -> float`` mapping (for the registry, JSON and metadata)."""
        return {
            **{k: float(v) for k, v in self.extra.items()},
            "sharpe": self.sharpe,
            "win_rate_pct": self.win_rate_pct,
            "max_drawdown_pct": self.max_drawdown_pct,
            "n_trades": float(self.n_trades),
            "n_wins": float(self.n_wins),
            "pnl_usd": self.pnl_usd,
            "worst_day_pnl_usd": self.worst_day_pnl_usd,
            "hours": self.hours,
        }


def flat(hours: float = 0.0) -> Performance:
    """Staying out of the market for ``hours``: the baseline without a current version."""
    return Performance(
        sharpe=0.0,
        win_rate_pct=0.0,
        max_drawdown_pct=0.0,
        n_trades=0,
        n_wins=0,
        pnl_usd=0.0,
        worst_day_pnl_usd=0.0,
        hours=hours,
    )


@dataclass(frozen=True, slots=True)
class GateDecision:
    """A gate's verdict on one version, with the baseline it was compared with."""

    stage: Stage
    outcome: Outcome
    window: str
    metrics: Mapping[str, float]
    checks: tuple[GateCheck, ...] = ()
    baseline: Mapping[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return self.outcome is Outcome.PASS

    @property
    def reason(self) -> str:
        """The failed (or, when waiting, the pending) checks in one sentence."""
        if self.outcome is Outcome.PASS:
            return f"{self.stage} passed on {self.window}"
        if self.outcome is Outcome.FAIL:
            failed = [c.reason for c in self.checks if not c.passed and not c.waiting]
            return f"{self.stage} failed on {self.window}: " + "; ".join(failed)
        pending = [c.reason for c in self.checks if c.waiting]
        return f"{self.stage} waiting on {self.window}: " + "; ".join(pending)

    def checks_as_dicts(self) -> list[dict[str, object]]:
        """The checks as JSON-ready dicts (for the audit trail)."""
        return [
            {
                "name": c.name,
                "value": c.value,
                "threshold": c.threshold,
                "passed": c.passed,
                "waiting": c.waiting,
                "reason": c.reason,
            }
            for c in self.checks
        ]


def _fmt(value: float, unit: str) -> str:
    if unit == "$":
        return f"-${-value:.2f}" if value < 0 else f"${value:.2f}"
    return f"{value:.6g}{unit}"


def _compare(name: str, value: float, threshold: float, relation: str, unit: str = "") -> GateCheck:
    """``value`` against ``threshold`` with ``relation`` ">=", ">" or "<="."""
    tolerance = _REL_TOL * abs(threshold)
    if relation == ">=":
        passed = value >= threshold - tolerance
    elif relation == ">":
        passed = value > threshold
    elif relation == "<=":
        passed = value <= threshold + tolerance
    else:
        raise ValueError(f"unknown relation {relation!r}")
    verdict = "ok" if passed else ("too high" if relation == "<=" else "too low")
    return GateCheck(
        name=name,
        value=value,
        threshold=threshold,
        passed=passed,
        reason=f"{name} {_fmt(value, unit)} ({verdict}; needs {relation} {_fmt(threshold, unit)})",
    )


def _at_least(name: str, value: float, threshold: float, unit: str = "") -> GateCheck:
    return _compare(name, value, threshold, ">=", unit)


def _above(name: str, value: float, threshold: float, unit: str = "") -> GateCheck:
    return _compare(name, value, threshold, ">", unit)


def _at_most(name: str, value: float, threshold: float, unit: str = "") -> GateCheck:
    return _compare(name, value, threshold, "<=", unit)


def _pending(check: GateCheck, why: str) -> GateCheck:
    """``check`` not judged yet: it neither passes nor fails the gate."""
    return GateCheck(
        name=check.name,
        value=check.value,
        threshold=check.threshold,
        passed=False,
        reason=f"{check.name} not judged ({why})",
        waiting=True,
    )


def _outcome(checks: Sequence[GateCheck]) -> Outcome:
    if any(not c.passed and not c.waiting for c in checks):
        return Outcome.FAIL
    if any(c.waiting for c in checks):
        return Outcome.WAIT
    return Outcome.PASS


def sharpe_degradation_pct(reference: float, observed: float) -> float:
    """How far ``observed`` fell below ``reference``, in percent of it (0 when it did not fall).

    From a reference of zero or below there is no percentage to take; any fall counts as 100 %.
    """
    if observed >= reference:
        return 0.0
    if reference > 0.0:
        return (reference - observed) / reference * 100.0
    return 100.0


def improvement_check(name: str, candidate: float, current: float, uplift_pct: float) -> GateCheck:
    """``candidate`` at least ``uplift_pct`` % above a positive ``current``; above zero when
    ``current`` is zero or negative (see the module notes)."""
    if current > 0.0:
        threshold = current + current * uplift_pct / 100.0
        passed = candidate >= threshold - _REL_TOL * threshold
        needs = f"needs >= {threshold:.6g}, current {current:.6g} + {uplift_pct:g} %"
    else:
        threshold = 0.0
        passed = candidate > 0.0
        needs = f"needs > 0 because current {current:.6g} is not positive"
    verdict = "ok" if passed else "too low"
    return GateCheck(
        name=name,
        value=candidate,
        threshold=threshold,
        passed=passed,
        reason=f"{name} {candidate:.6g} ({verdict}; {needs})",
    )


def safety_checks(
    perf: Performance, *, reference_sharpe: float, limits: SafetyLimits, can_wait: bool
) -> tuple[GateCheck, ...]:
    """The five safety limits of SPEC section 5, each with its own reason.

    ``reference_sharpe`` is what the set was expected to do (its validation Sharpe at COLD, its
    COLD Sharpe afterwards). With fewer than ``limits.min_trades`` trades the statistical limits
    are pending, and the trade count waits when ``can_wait`` (else it fails).
    """
    loss = max(0.0, -perf.worst_day_pnl_usd)
    trades = _at_least("safety.min_trades", float(perf.n_trades), float(limits.min_trades))
    degradation = _at_most(
        "safety.sharpe_degradation",
        sharpe_degradation_pct(reference_sharpe, perf.sharpe),
        limits.max_sharpe_degradation_pct,
        "%",
    )
    win_rate = _at_least("safety.win_rate", perf.win_rate_pct, limits.min_win_rate_pct, "%")
    if not trades.passed:
        why = f"{perf.n_trades} of {limits.min_trades} trades"
        degradation = _pending(degradation, why)
        win_rate = _pending(win_rate, why)
        if can_wait:
            trades = _pending(trades, f"{perf.n_trades} trades so far, needs {limits.min_trades}")
    return (
        _at_most("safety.daily_loss", loss, limits.max_daily_loss_usd, "$"),
        _at_most("safety.max_drawdown", perf.max_drawdown_pct, limits.max_drawdown_pct, "%"),
        trades,
        degradation,
        win_rate,
    )


def cold_gate(
    evaluate_days: Callable[[int], Performance],
    config: ColdGateConfig,
    *,
    reference_sharpe: float,
    limits: SafetyLimits,
) -> GateDecision:
    """Judge a candidate on the most recent unseen days.

    ``evaluate_days(d)`` backtests the candidate on the last ``d`` days of the hold-out. Seven
    days of hourly bars often hold too few trades, so the window grows through
    ``config.window_days`` until it holds ``config.min_trades``; the decision is taken on the last
    window tried. COLD judges history that exists already, so it never waits.
    """
    if not config.window_days:
        raise ValueError("the COLD gate needs at least one window length")
    days = config.window_days[0]
    perf = evaluate_days(days)
    for longer in config.window_days[1:]:
        if perf.n_trades >= config.min_trades:
            break
        days, perf = longer, evaluate_days(longer)
    checks = (
        _at_least("sharpe", perf.sharpe, config.min_sharpe),
        _at_least("win_rate", perf.win_rate_pct, config.min_win_rate_pct, "%"),
        _above("pnl", perf.pnl_usd, 0.0, "$"),
        _at_least("trades", float(perf.n_trades), float(config.min_trades)),
        *safety_checks(perf, reference_sharpe=reference_sharpe, limits=limits, can_wait=False),
    )
    return GateDecision(
        stage=Stage.COLD,
        outcome=_outcome(checks),
        window=f"the last {days} days",
        metrics={**perf.as_dict(), "window_days": float(days)},
        checks=checks,
    )


def _elapsed(perf: Performance, min_hours: float) -> tuple[GateCheck, bool]:
    """The elapsed-time check, and whether the window is complete."""
    window = _at_least("window_hours", perf.hours, min_hours, " h")
    if window.passed:
        return window, True
    return _pending(window, f"{perf.hours:.1f} of {min_hours:g} h so far"), False


def warm_gate(
    candidate: Performance,
    current: Performance | None,
    *,
    reference_sharpe: float,
    config: WarmGateConfig,
    limits: SafetyLimits,
) -> GateDecision:
    """Judge paper trading of a candidate against the current set on the same new bars.

    ``candidate`` and ``current`` are ``paper_performance`` on the bars after the candidate was
    made (``current`` None: no current version, the baseline is flat). The candidate waits until
    the bars cover ``config.min_hours`` and hold ``limits.min_trades`` trades; past
    ``config.max_wait_hours`` of bars it fails instead of waiting for ever.
    """
    base = current or flat(candidate.hours)
    window, complete = _elapsed(candidate, config.min_hours)
    # Past the longest wait a missing trade count fails instead of waiting for ever.
    expired = candidate.hours >= config.max_wait_hours
    enough = candidate.n_trades >= limits.min_trades
    sharpe = improvement_check(
        "sharpe_vs_current", candidate.sharpe, base.sharpe, config.sharpe_uplift_pct
    )
    win_rate = _at_least(
        "win_rate_vs_current",
        candidate.win_rate_pct,
        base.win_rate_pct + config.win_rate_margin_pts,
        "%",
    )
    if not (enough and complete):
        why = "the window is not complete" if enough else f"{candidate.n_trades} trades so far"
        sharpe, win_rate = _pending(sharpe, why), _pending(win_rate, why)
    safety = safety_checks(
        candidate, reference_sharpe=reference_sharpe, limits=limits, can_wait=not expired
    )
    checks = (
        window,
        sharpe,
        win_rate,
        _at_most("drawdown", candidate.max_drawdown_pct, config.max_drawdown_pct, "%"),
        *safety,
    )
    return GateDecision(
        stage=Stage.WARM,
        outcome=_outcome(checks),
        window=f"{candidate.hours:.1f} h of bars after the candidate was made",
        metrics=candidate.as_dict(),
        checks=checks,
        baseline=base.as_dict(),
    )


def limited_gate(
    candidate: Performance,
    current: Performance | None,
    *,
    reference_sharpe: float,
    config: LimitedGateConfig,
    limits: SafetyLimits,
) -> GateDecision:
    """Judge live trading with ``config.capital_fraction`` of the capital against the current set.

    ``candidate`` and ``current`` are ``live_performance`` over the same hours since the version
    entered LIMITED. The realized loss is judged at once; the rest once ``config.min_hours`` have
    passed and ``limits.min_trades`` trades closed (the candidate waits until then, at most
    ``config.max_wait_hours``).
    """
    base = current or flat(candidate.hours)
    window, complete = _elapsed(candidate, config.min_hours)
    # Past the longest wait a missing trade count fails instead of waiting for ever.
    expired = candidate.hours >= config.max_wait_hours
    enough = candidate.n_trades >= limits.min_trades
    sharpe = improvement_check(
        "sharpe_vs_current", candidate.sharpe, base.sharpe, config.sharpe_uplift_pct
    )
    wins = _at_least("winning_trades", float(candidate.n_wins), float(config.min_winning_trades))
    if not (enough and complete):
        why = "the window is not complete" if enough else f"{candidate.n_trades} trades so far"
        sharpe = _pending(sharpe, why)
        if not wins.passed:
            wins = _pending(wins, why)
    safety = safety_checks(
        candidate, reference_sharpe=reference_sharpe, limits=limits, can_wait=not expired
    )
    checks = (
        window,
        sharpe,
        wins,
        _at_most("realized_loss", max(0.0, -candidate.pnl_usd), config.max_realized_loss_usd, "$"),
        *safety,
    )
    return GateDecision(
        stage=Stage.LIMITED,
        outcome=_outcome(checks),
        window=f"{candidate.hours:.1f} h of live trading",
        metrics=candidate.as_dict(),
        checks=checks,
        baseline=base.as_dict(),
    )


def safety_gate(
    perf: Performance, *, reference_sharpe: float, limits: SafetyLimits, window: str
) -> GateDecision:
    """The safety limits alone, for the current (FULL) set after its promotion. FAIL is a breach
    (roll back); WAIT means the statistical limits need more trades."""
    checks = safety_checks(perf, reference_sharpe=reference_sharpe, limits=limits, can_wait=True)
    return GateDecision(
        stage=Stage.FULL,
        outcome=_outcome(checks),
        window=window,
        metrics=perf.as_dict(),
        checks=checks,
    )


@dataclass(frozen=True, slots=True)
class RegimeChoice:
    """The outcome for one regime: the first candidate that passed, or why none did."""

    regime: PromotionRegime
    level: int
    params: Params | None
    decision: GateDecision | None
    tried: int
    reason: str
    index: int | None = None  # position of the chosen candidate in the list


def choose_for_regime(
    regime: PromotionRegime,
    level: int,
    candidates: Sequence[Params],
    gate: Callable[[int, Params], GateDecision],
) -> RegimeChoice:
    """Walk the level's candidates in validation order and keep the first that passes ``gate``
    (called with the candidate's position and its parameters)."""
    last: GateDecision | None = None
    for index, params in enumerate(candidates):
        last = gate(index, params)
        if last.passed:
            return RegimeChoice(regime, level, params, last, index + 1, last.reason, index)
    reason = (
        f"no candidate of level {level} passed: {last.reason}"
        if last
        else f"level {level} produced no candidate"
    )
    return RegimeChoice(regime, level, None, last, len(candidates), reason)


# --- performance on bars -------------------------------------------------------------------


def watermark(bars: Mapping[str, pl.DataFrame]) -> dict[str, datetime]:
    """Per instrument, the newest bar known now: what a version made now has already seen."""
    out: dict[str, datetime] = {}
    for instrument, frame in bars.items():
        last = frame["ts"].max() if frame.height else None
        if isinstance(last, datetime):
            out[instrument] = last
    return out


def _floats(params: Params) -> dict[str, float]:
    return {k: float(v) for k, v in params.items() if not isinstance(v, str)}


def paper_performance(
    bars: Mapping[str, pl.DataFrame],
    params: Params,
    *,
    since: Mapping[str, datetime],
    strategy: EntryStrategy,
    direction: Direction,
    costs: CostModel,
    periods_per_year: Mapping[str, float],
    warmup_bars: int = 400,
) -> Performance:
    """Backtest ``params`` on the bars after ``since`` (per instrument), with the engine.

    Each instrument starts flat with ``INIT_CASH`` at its first bar after ``since``; signals are
    computed from ``warmup_bars`` earlier so indicators are warm. Metrics pool the instruments in
    order as everywhere in the project (``evaluation.evaluate_recent`` gives the same numbers);
    daily PnL adds the instruments' dollar PnL per UTC day. Instruments missing from ``since``
    are left out (they were not known when the version was made). ``hours`` is the longest span
    from ``since`` to an instrument's newest bar.
    """
    row = engine_row(trade_params(params), costs, direction)
    stats = engine.new_stats()
    daily: dict[np.datetime64, float] = {}
    n_bars = 0
    ppy_sum = 0.0
    pnl = 0.0
    hours = 0.0
    for instrument, frame in bars.items():
        mark = since.get(instrument)
        if mark is None or not frame.height:
            continue
        newest = frame["ts"][-1]
        hours = max(hours, (newest - mark).total_seconds() / 3600.0)
        lo = int((frame["ts"] <= mark).sum())
        n = frame.height
        if n - lo < MIN_PERIOD_BARS:
            continue
        start = max(0, lo - warmup_bars)
        segment = bars_to_segment(frame.slice(start), instrument, periods_per_year[instrument])
        signals = strategy.signals_for(segment, _floats(params))
        k = lo - start
        returns = np.zeros(n - lo, dtype=np.float64)
        no_trades = np.empty((0, engine.N_TRADE_FIELDS), dtype=np.float64)
        engine.simulate_segment(
            segment.open, segment.high, segment.low, segment.close, signals, k, len(segment),
            row, INIT_CASH, stats, no_trades, returns,
        )  # fmt: skip
        equity = INIT_CASH * np.cumprod(1.0 + returns)
        bar_pnl = np.diff(equity, prepend=INIT_CASH)
        days = segment.ts[k:].astype("datetime64[D]")
        for day, amount in zip(*_group_sum(days, bar_pnl), strict=True):
            daily[day] = daily.get(day, 0.0) + amount
        pnl += float(equity[-1] - INIT_CASH)
        n_bars += n - lo
        ppy_sum += periods_per_year[instrument] * (n - lo)
    if not n_bars:
        return flat(hours)
    metrics = engine.stats_to_metrics(stats, ppy_sum / n_bars)
    return Performance(
        sharpe=metrics.sharpe,
        win_rate_pct=metrics.win_rate_pct,
        max_drawdown_pct=metrics.max_drawdown_pct,
        n_trades=metrics.n_trades,
        n_wins=int(stats[engine.S_WINS]),
        pnl_usd=pnl,
        worst_day_pnl_usd=min(daily.values()),
        hours=hours,
        extra={**metrics.as_dict(), "bars": float(n_bars)},
    )


def _group_sum(keys: np.ndarray, values: np.ndarray) -> tuple[list[np.datetime64], list[float]]:
    uniques, inverse = np.unique(keys, return_inverse=True)
    sums = np.zeros(uniques.size, dtype=np.float64)
    np.add.at(sums, inverse, values)
    return list(uniques), [float(s) for s in sums]


# --- live results -----------------------------------------------------------------------------

LIVE_RESULT_COLUMNS: Mapping[str, pl.DataType] = {
    "trade_id": pl.String(),
    "regime": pl.String(),
    "version": pl.Int64(),
    "instrument": pl.String(),
    "opened_at": pl.Datetime("us", "UTC"),
    "closed_at": pl.Datetime("us", "UTC"),
    "pnl_usd": pl.Float64(),
    "capital_usd": pl.Float64(),
}


def normalize_live_results(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    """Check one file of live results against the documented format and cast it.

    Timestamps without a zone are read as UTC. Raises ``ValueError`` naming the file and the
    problem: a missing column, a null, a regime that does not exist, a non-positive capital.
    """
    missing = [c for c in LIVE_RESULT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"live results {source}: missing columns {missing}")
    out = frame.select(list(LIVE_RESULT_COLUMNS))
    for name in ("opened_at", "closed_at"):
        column = out[name]
        if column.dtype == pl.String:
            column = column.str.to_datetime(time_unit="us")
        if not isinstance(column.dtype, pl.Datetime):
            raise ValueError(f"live results {source}: {name} is {column.dtype}, not a timestamp")
        if column.dtype.time_zone is None:
            column = column.dt.replace_time_zone("UTC")
        out = out.with_columns(column.dt.convert_time_zone("UTC").dt.cast_time_unit("us"))
    try:
        out = out.cast(pl.Schema(LIVE_RESULT_COLUMNS))
    except pl.exceptions.PolarsError as error:
        raise ValueError(f"live results {source}: {error}") from error
    nulls = [c for c in out.columns if out[c].null_count()]
    if nulls:
        raise ValueError(f"live results {source}: nulls in {nulls}")
    unknown = set(out["regime"].unique()) - {r.value for r in PromotionRegime}
    if unknown:
        raise ValueError(f"live results {source}: unknown regimes {sorted(unknown)}")
    if (out["capital_usd"] <= 0).any():
        raise ValueError(f"live results {source}: capital_usd must be positive")
    if (out["closed_at"] < out["opened_at"]).any():
        raise ValueError(f"live results {source}: a trade closes before it opens")
    return out


def combine_live_results(frames: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """All normalized files as one table. A trade sent twice (same ``trade_id``, same values) is
    kept once; the same ``trade_id`` with different values is an error."""
    if not frames:
        return pl.DataFrame(schema=dict(LIVE_RESULT_COLUMNS))
    out = pl.concat(frames).unique(maintain_order=True)
    clashes = out.filter(pl.col("trade_id").is_duplicated())["trade_id"].unique().to_list()
    if clashes:
        raise ValueError(f"live results: trade_id with conflicting rows: {sorted(clashes)[:5]}")
    return out.sort("closed_at")


def live_performance(
    results: pl.DataFrame,
    *,
    regime: str,
    version: int,
    since: datetime,
    until: datetime,
    bar_period: timedelta,
    periods_per_year: float,
) -> Performance:
    """Performance of one version from its trades that closed in ``[since, until)``.

    Returns per trade are ``pnl_usd / capital_usd``. Sharpe: those returns summed per
    ``bar_period`` bucket from ``since`` (buckets without a closed trade count as 0), annualized
    with ``periods_per_year``, so it reads like the bar Sharpe of the backtests (realized PnL is
    lumpier than marked-to-market; both sides of a comparison are measured alike). Drawdown: of
    the cumulative return in closing order, from a start of 1. Daily PnL: by UTC day of closing.
    """
    if until < since:
        raise ValueError(f"live window ends before it starts: {since} .. {until}")
    rows = results.filter(
        (pl.col("regime") == regime)
        & (pl.col("version") == version)
        & (pl.col("closed_at") >= since)
        & (pl.col("closed_at") < until)
    ).sort("closed_at")
    hours = (until - since).total_seconds() / 3600.0
    if rows.is_empty():
        return flat(hours)
    pnl = rows["pnl_usd"].to_numpy()
    returns = pnl / rows["capital_usd"].to_numpy()
    n_buckets = math.ceil((until - since) / bar_period)
    offsets = (rows["closed_at"] - since).to_numpy() // np.timedelta64(bar_period)
    buckets = np.zeros(n_buckets, dtype=np.float64)
    np.add.at(buckets, offsets.astype(np.int64), returns)
    sharpe = 0.0
    if n_buckets >= 2:
        std = float(np.std(buckets, ddof=1))
        if std > 0.0:
            sharpe = float(np.mean(buckets)) / std * math.sqrt(periods_per_year)
    equity = 1.0 + np.cumsum(returns)
    peak = np.maximum.accumulate(np.concatenate(([1.0], equity)))[1:]
    days = rows["closed_at"].dt.replace_time_zone(None).to_numpy().astype("datetime64[D]")
    _, day_pnl = _group_sum(days, pnl)
    wins = int((pnl > 0).sum())
    return Performance(
        sharpe=sharpe,
        win_rate_pct=wins / pnl.size * 100.0,
        max_drawdown_pct=float(np.max(1.0 - equity / peak) * 100.0),
        n_trades=int(pnl.size),
        n_wins=wins,
        pnl_usd=float(pnl.sum()),
        worst_day_pnl_usd=min(day_pnl),
        hours=hours,
        extra={"total_return_pct": float(returns.sum() * 100.0)},
    )
