"""The promotion's names and thresholds: the regimes, the stages, a gate's outcome, and one
config object per stage plus the safety limits (SPEC section 5)."""

from dataclasses import dataclass, field
from enum import StrEnum

HOURS_PER_DAY = 24.0
_INF = float("inf")


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


def _raise_if_any(stage: str, problems: list[str]) -> None:
    if problems:
        raise ValueError(f"{stage}: " + "; ".join(problems))


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
        if self.max_wait_hours < self.min_hours:
            raise ValueError("WARM max_wait_hours must be at least min_hours")
        rules = {
            "min_hours": _POSITIVE,
            "sharpe_uplift_pct": _NON_NEGATIVE,
            "win_rate_margin_pts": _PERCENT,
            "max_drawdown_pct": _POSITIVE_PERCENT,
        }
        _raise_if_any("WARM gate", _range_problems(self, rules))


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
        rules = {
            "min_hours": _POSITIVE,
            "sharpe_uplift_pct": _NON_NEGATIVE,
            "min_winning_trades": _AT_LEAST_ONE,
            "max_realized_loss_usd": _NON_NEGATIVE,
        }
        _raise_if_any("LIMITED gate", _range_problems(self, rules))


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
