"""Promotion: per regime, the best level candidate that passes the COLD gate becomes current."""

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    AutomationCondition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from ffe_dagster.assets.loading import load_level_data
from ffe_dagster.config import Universe
from ffe_dagster.core.backtest import Segment
from ffe_dagster.core.curriculum import CurriculumSpec, bars_to_segment
from ffe_dagster.core.evaluation import Params, evaluate_recent
from ffe_dagster.core.levels import LevelData, entry_strategy
from ffe_dagster.core.promotion import (
    ColdGateConfig,
    GateDecision,
    PromotionRegime,
    choose_for_regime,
    cold_gate,
)
from ffe_dagster.resources.registry import ParameterRegistryResource
from ffe_dagster.resources.warehouse import WarehouseResource

WARMUP_BARS = 400


def _holdout_segments(data: LevelData) -> list[Segment]:
    """Per instrument, the hold-out bars plus enough earlier bars to warm the indicators."""
    segments: list[Segment] = []
    for instrument, bars in data.bars.items():
        start = data.holdout_start[instrument]
        idx = int((bars["ts"] < start).sum())
        piece = bars.slice(max(0, idx - WARMUP_BARS))
        segments.append(bars_to_segment(piece, instrument, data.periods_per_year[instrument]))
    return segments


def export_current(registry: ParameterRegistryResource, path: Path, run_id: str) -> dict[str, Any]:
    """Write the current parameters per regime as JSON for the trading system."""
    regimes: dict[str, Any] = {}
    for regime in PromotionRegime:
        current = registry.current(regime.value)
        regimes[regime.value] = (
            None
            if current is None
            else {
                "version": current["version"],
                "level": current["level"],
                "params": current["params"],
                "cold_metrics": current["metrics"],
                "promoted_at": str(current["created_at"]),
                "promoted_by_run": current["run_id"],
            }
        )
    payload = {
        "schema": "ffe_dagster.promoted_parameters/1",
        "generated_at": datetime.now(UTC).isoformat(),
        "dagster_run_id": run_id,
        "regimes": regimes,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)  # atomic: the trading system never reads a half-written file
    return payload


def build_promotion_asset(
    curriculum: CurriculumSpec, universe: Universe, export_path: Path
) -> AssetsDefinition:
    """The ``promoted_parameters`` asset over every level of the curriculum."""

    @asset(
        deps=[lv.asset for lv in curriculum.levels],
        group_name="promotion",
        automation_condition=AutomationCondition.eager(),
        kinds={"sql", "json"},
    )
    def promoted_parameters(
        context: AssetExecutionContext,
        warehouse: WarehouseResource,
        registry: ParameterRegistryResource,
    ) -> MaterializeResult:
        """Current parameters per regime (BULL, BEAR, SIDEWAYS, DEFAULT). Each level's
        candidates, in validation order, face the COLD gate on recent bars no study saw
        (Sharpe >= 0.5, win rate >= 40 %, PnL > 0, >= 20 trades); the first to pass becomes a
        new current version in the registry, a rejection is recorded with its reason. The
        current set is exported as JSON for the trading system."""
        data = load_level_data(warehouse, universe, curriculum.holdout_days)
        segments = _holdout_segments(data)
        strategy = entry_strategy(curriculum)
        config = ColdGateConfig()
        trigger = context.run.tags.get("ffe/trigger", "manual")
        decisions: dict[str, dict[str, Any]] = {}
        for spec in curriculum.levels:
            result = warehouse.latest_level_result(spec.level)
            if not spec.promotes:
                continue
            if result is None:
                raise ValueError(f"level {spec.level} has no result: materialize {spec.asset}")
            candidates: list[Params] = [c["params"] for c in result["candidates"]]

            def gate(params: Params, direction=spec.direction) -> GateDecision:
                return cold_gate(
                    lambda days: evaluate_recent(
                        segments,
                        params,
                        strategy=strategy,
                        direction=direction,
                        costs=curriculum.costs,
                        days=days,
                    ),
                    config,
                )

            for regime_name in spec.promotes:
                choice = choose_for_regime(
                    PromotionRegime(regime_name), spec.level, candidates, gate
                )
                if choice.params is not None and choice.decision is not None:
                    metrics = choice.decision.metrics
                    params: Params = choice.params
                elif result["chosen"] is not None:
                    metrics = choice.decision.metrics if choice.decision else {}
                    params = result["chosen"]["params"]
                else:
                    metrics, params = {}, {}
                version = registry.record(
                    regime=regime_name,
                    level=spec.level,
                    params=params,
                    metrics=metrics,
                    stage="COLD",
                    promoted=choice.params is not None,
                    reason=choice.reason,
                    trigger=trigger,
                    run_id=context.run.run_id,
                )
                decisions[regime_name] = {
                    "promoted": choice.params is not None,
                    "version": version,
                    "level": spec.level,
                    "candidates_tried": choice.tried,
                    "reason": choice.reason,
                }
                context.log.info(f"{regime_name}: {choice.reason}")
        payload = export_current(registry, export_path, context.run.run_id)
        table = pl.DataFrame(
            [{"regime": k, **{kk: str(vv) for kk, vv in v.items()}} for k, v in decisions.items()]
        )
        return MaterializeResult(
            metadata={
                "export_path": MetadataValue.path(str(export_path)),
                "promoted": sum(d["promoted"] for d in decisions.values()),
                "decisions": MetadataValue.md(_markdown(table)),
                "current": MetadataValue.json(payload["regimes"]),
            }
        )

    return promoted_parameters


def _markdown(table: pl.DataFrame) -> str:
    if table.is_empty():
        return "no regime to promote"
    header = "| " + " | ".join(table.columns) + " |"
    sep = "|" + "---|" * len(table.columns)
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.iter_rows()]
    return "\n".join([header, sep, *rows])
