"""What one promotion cycle decided: its report rows and the changes of current versions."""

from dataclasses import dataclass, field

from ffe_dagster.core.promotion.config import Stage
from ffe_dagster.core.promotion.records import Action, RegimeAction


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """One line of the cycle's report."""

    regime: str
    version: int | None
    stage: Stage
    decision: str  # an ``Action``, a ``RegimeAction``, or the safety watch's "watch: <outcome>"
    reason: str


@dataclass(frozen=True, slots=True)
class CurrentChange:
    """A change of a regime's current version (what the trading system and MLflow follow)."""

    regime: str
    action: Action | RegimeAction  # promote, rollback, suspend; blocked: the level did not pass
    version: int | None  # the new current version; None after a suspension
    previous: int | None
    reason: str
    trigger: str


@dataclass
class CycleReport:
    """What one promotion cycle decided."""

    rows: list[DecisionRow] = field(default_factory=list)
    changes: list[CurrentChange] = field(default_factory=list)

    def add(self, regime: str, version: int | None, stage: Stage, decision: str, why: str) -> None:
        """Append one decision."""
        self.rows.append(DecisionRow(regime, version, stage, decision, why))
