"""The promotion's names and thresholds: the regimes, the stages, a gate's outcome, and one
config object per stage plus the safety limits (docs/spec.md §5).

The values are the user's settings, kept in ``ffe_dagster/config/promotion.yaml`` and read by
``ffe_dagster.config.promotion_file``. The defaults below equal that file (a test compares
them); they let tests and tools build one stage's limits without reading it.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

HOURS_PER_DAY = 24.0
_INF = float("inf")


class InvalidLimits(ValueError):
    """Limits out of range: ``problems`` name each field (``min_trades must be >= 1, got 0``),
    the message prefixes them with the stage (``COLD gate: ...``)."""

    def __init__(self, stage: str, problems: Sequence[str]) -> None:
        self.stage = stage
        self.problems = tuple(problems)
        super().__init__(f"{stage}: " + "; ".join(self.problems))


def _range_problems(obj: object, rules: dict[str, tuple[float, float, bool]]) -> list[str]:
    """``field must be in ...`` for each field outside its ``(low, high, low_open)`` range."""
    problems = []
    for name, (low, high, low_open) in rules.items():
        value = getattr(obj, name)
        if value < low or (low_open and value == low) or value > high:
            if high == _INF:
                allowed = f"{'>' if low_open else '>='} {low:g}"
            else:
                allowed = f"in {'(' if low_open else '['}{low:g}, {high:g}]"
            problems.append(f"{name} must be {allowed}, got {value:g}")
    return problems


def _wait_problems(min_hours: float, max_wait_hours: float) -> list[str]:
    if max_wait_hours < min_hours:
        return [f"max_wait_hours must be >= min_hours ({min_hours:g}), got {max_wait_hours:g}"]
    return []


def _raise_if_any(stage: str, problems: list[str]) -> None:
    if problems:
        raise InvalidLimits(stage, problems)


_PERCENT = (0.0, 100.0, False)
_POSITIVE_PERCENT = (0.0, 100.0, True)
_POSITIVE = (0.0, _INF, True)
_NON_NEGATIVE = (0.0, _INF, False)
_AT_LEAST_ONE = (1.0, _INF, False)


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
    """COLD: a backtest on recent bars no study saw (docs/spec.md §5)."""

    window_days: tuple[int, ...] = (7, 14, 30)
    min_sharpe: float = 0.5
    min_win_rate_pct: float = 40.0
    min_trades: int = 20

    def __post_init__(self) -> None:
        problems = _range_problems(
            self, {"min_win_rate_pct": _PERCENT, "min_trades": _AT_LEAST_ONE}
        )
        days = list(self.window_days)
        if not days or min(days) < 1 or days != sorted(set(days)):
            problems.append(f"window_days must be increasing whole days >= 1, got {days}")
        _raise_if_any("COLD gate", problems)


@dataclass(frozen=True, slots=True)
class WarmGateConfig:
    """WARM: paper trading on bars that arrived after the candidate was made."""

    min_hours: float = 4.0
    max_wait_hours: float = 30 * HOURS_PER_DAY
    sharpe_uplift_pct: float = 10.0
    win_rate_margin_pts: float = 2.0
    max_drawdown_pct: float = 8.0

    def __post_init__(self) -> None:
        rules = {
            "min_hours": _POSITIVE,
            "sharpe_uplift_pct": _NON_NEGATIVE,
            "win_rate_margin_pts": _PERCENT,
            "max_drawdown_pct": _POSITIVE_PERCENT,
        }
        problems = _range_problems(self, rules)
        problems += _wait_problems(self.min_hours, self.max_wait_hours)
        _raise_if_any("WARM gate", problems)


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
        rules = {
            "capital_fraction": (0.0, 1.0, True),
            "min_hours": _POSITIVE,
            "sharpe_uplift_pct": _NON_NEGATIVE,
            "min_winning_trades": _AT_LEAST_ONE,
            "max_realized_loss_usd": _NON_NEGATIVE,
        }
        problems = _range_problems(self, rules)
        _raise_if_any(
            "LIMITED gate", problems + _wait_problems(self.min_hours, self.max_wait_hours)
        )


@dataclass(frozen=True, slots=True)
class SafetyLimits:
    """Limits checked at every stage and on the current set after its promotion."""

    max_daily_loss_usd: float = 5.0
    max_sharpe_degradation_pct: float = 30.0
    max_drawdown_pct: float = 8.0
    min_win_rate_pct: float = 40.0
    min_trades: int = 20

    def __post_init__(self) -> None:
        rules = {
            "max_daily_loss_usd": _POSITIVE,
            "max_sharpe_degradation_pct": _POSITIVE,
            "max_drawdown_pct": _POSITIVE_PERCENT,
            "min_win_rate_pct": _PERCENT,
            "min_trades": _AT_LEAST_ONE,
        }
        _raise_if_any("safety limits", _range_problems(self, rules))


@dataclass(frozen=True, slots=True)
class PromotionConfig:
    """Every threshold of the promotion, one object per stage."""

    cold: ColdGateConfig = field(default_factory=ColdGateConfig)
    warm: WarmGateConfig = field(default_factory=WarmGateConfig)
    limited: LimitedGateConfig = field(default_factory=LimitedGateConfig)
    safety: SafetyLimits = field(default_factory=SafetyLimits)


def _widening(days: tuple[int, ...], trades: int) -> str:
    if len(days) == 1:
        return f"the last {days[0]} days"
    longer = ", ".join(str(d) for d in days[1:-1])
    longer = f"{longer} or {days[-1]}" if longer else str(days[-1])
    return f"the last {days[0]} days (widened to {longer} until the window holds {trades} trades)"


def describe_promotion(config: PromotionConfig) -> str:
    """The promotion in words, every threshold taken from ``config`` (the promotion asset's
    description, so the UI shows the limits in force, never a copy that can drift)."""
    c, w, lim, s = config.cold, config.warm, config.limited, config.safety
    return (
        "Current parameters per regime (BULL, BEAR, SIDEWAYS, DEFAULT), promoted through "
        "COLD -> WARM -> LIMITED -> FULL across cycles. COLD: a level's candidates, in validation "
        f"order, on {_widening(c.window_days, c.min_trades)} of recent bars no study saw "
        f"(Sharpe >= {c.min_sharpe:g}, win rate >= {c.min_win_rate_pct:g} %, PnL > 0, >= "
        f"{c.min_trades} trades). WARM: paper trading on bars that arrived after the candidate "
        f"was made, against the current set on the same bars, judged after {w.min_hours:g} h "
        f"and failed if still short of trades after {w.max_wait_hours:g} h (Sharpe "
        f"+{w.sharpe_uplift_pct:g} %, win rate +{w.win_rate_margin_pts:g} points, drawdown <= "
        f"{w.max_drawdown_pct:g} %). LIMITED: live results the trading system reports with "
        f"{lim.capital_fraction * 100:g} % of the capital for {lim.min_hours:g} h, at most "
        f"{lim.max_wait_hours:g} h (Sharpe +{lim.sharpe_uplift_pct:g} %, >= "
        f"{lim.min_winning_trades} winning trades, realized loss <= "
        f"${lim.max_realized_loss_usd:g}). Safety limits (daily loss <= "
        f"${s.max_daily_loss_usd:g}, Sharpe degradation <= {s.max_sharpe_degradation_pct:g} %, "
        f"drawdown <= {s.max_drawdown_pct:g} %, win rate >= {s.min_win_rate_pct:g} %, judged "
        f"from {s.min_trades} trades) apply at every stage and to the current set, which is "
        "rolled back automatically on a breach. Every decision is in the registry; the sets are "
        "exported as JSON for the trading system."
    )
