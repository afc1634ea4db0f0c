"""Promotion decisions per regime: the COLD, WARM and LIMITED gates, the safety limits, and the
paper and live performance they judge (SPEC section 5).

A candidate climbs COLD -> WARM -> LIMITED -> FULL across cycles. Each gate returns a
``GateDecision`` whose every threshold is a ``GateCheck`` with its own reason, and whose outcome is
PASS, FAIL or WAIT: a stage that has not seen enough bars, hours or trades to judge WAITS (the
candidate stays where it is) instead of failing. This package is pure; the registry keeps the
stage of every version and ``assets/promotion.py`` runs the gates once per cycle.

Import each name from the module that owns it:

- ``config``: ``PromotionRegime``, ``Stage``, ``Outcome`` and the thresholds (``PromotionConfig``
  with ``ColdGateConfig``, ``WarmGateConfig``, ``LimitedGateConfig``, ``SafetyLimits``).
- ``checks``: ``GateCheck``, ``GateDecision`` and the threshold comparisons.
- ``performance``: ``Performance``, ``paper_performance``, ``watermark`` and the live results
  (``normalize_live_results``, ``combine_live_results``, ``live_performance``).
- ``safety``: the safety limits (``safety_checks``, ``safety_gate``, ``sharpe_degradation_pct``).
- ``gates``: ``cold_gate``, ``warm_gate``, ``limited_gate`` and ``choose_for_regime``.
"""
