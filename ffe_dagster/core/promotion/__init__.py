"""Promotion decisions per regime: the COLD, WARM and LIMITED gates, the safety limits, and the
paper and live performance they judge (docs/spec.md §5).

A candidate climbs COLD -> WARM -> LIMITED -> FULL across cycles. Each gate returns a
``GateDecision`` whose every threshold is a ``GateCheck`` with its own reason, and whose outcome is
PASS, FAIL or WAIT: a stage that has not seen enough bars, hours or trades to judge WAITS (the
candidate stays where it is) instead of failing. This package is pure; the registry keeps the
stage of every version and ``promotion/asset.py`` runs the gates once per cycle.

Each name lives in one module, and is re-exported here:

- ``config``: ``PromotionRegime``, ``Stage``, ``Outcome`` and the thresholds (``PromotionConfig``
  with ``ColdGateConfig``, ``WarmGateConfig``, ``LimitedGateConfig``, ``SafetyLimits``;
  ``InvalidLimits``, ``describe_promotion``).
- ``checks``: ``GateCheck``, ``GateDecision`` and the threshold comparisons.
- ``performance``: ``Performance``, ``paper_performance``, ``watermark`` and the live results
  (``normalize_live_results``, ``combine_live_results``, ``live_performance``).
- ``safety``: the safety limits (``safety_checks``, ``safety_gate``, ``sharpe_degradation_pct``).
- ``gates``: ``cold_gate``, ``warm_gate``, ``limited_gate`` and ``choose_for_regime``.
- ``records``: what the registry stores and reads back (``ParameterVersion``, ``Transition``,
  ``RegimeDecision``) and the enums of its columns (``VersionStatus``, ``Action``,
  ``RegimeAction``, ``Trigger``).
- ``registry``: ``PromotionRegistry``, the Protocol the state machine, the export and the
  rollback depend on (SQL in ``resources/registry.py``, in memory in ``tests/fakes``).
"""

from ffe_dagster.core.promotion.checks import GateCheck, GateDecision, at_least, at_most
from ffe_dagster.core.promotion.config import (
    ColdGateConfig,
    InvalidLimits,
    LimitedGateConfig,
    Outcome,
    PromotionConfig,
    PromotionRegime,
    SafetyLimits,
    Stage,
    WarmGateConfig,
    describe_promotion,
)
from ffe_dagster.core.promotion.gates import choose_for_regime, cold_gate, limited_gate, warm_gate
from ffe_dagster.core.promotion.performance import (
    LIVE_RESULT_COLUMNS,
    Performance,
    combine_live_results,
    live_performance,
    normalize_live_results,
    paper_performance,
    watermark,
)
from ffe_dagster.core.promotion.records import (
    Action,
    Marks,
    ParameterVersion,
    RegimeAction,
    RegimeDecision,
    Transition,
    Trigger,
    VersionStatus,
)
from ffe_dagster.core.promotion.registry_protocol import PromotionRegistry
from ffe_dagster.core.promotion.safety import safety_gate, sharpe_degradation_pct

__all__ = [
    "LIVE_RESULT_COLUMNS",
    "Action",
    "ColdGateConfig",
    "GateCheck",
    "GateDecision",
    "InvalidLimits",
    "LimitedGateConfig",
    "Marks",
    "Outcome",
    "ParameterVersion",
    "Performance",
    "PromotionConfig",
    "PromotionRegime",
    "PromotionRegistry",
    "RegimeAction",
    "RegimeDecision",
    "SafetyLimits",
    "Stage",
    "Transition",
    "Trigger",
    "VersionStatus",
    "WarmGateConfig",
    "at_least",
    "at_most",
    "choose_for_regime",
    "cold_gate",
    "combine_live_results",
    "describe_promotion",
    "limited_gate",
    "live_performance",
    "normalize_live_results",
    "paper_performance",
    "safety_gate",
    "sharpe_degradation_pct",
    "warm_gate",
    "watermark",
]
