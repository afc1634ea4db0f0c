"""The ``promoted_parameters`` asset: one promotion step per cycle (``state_machine``), then
the MLflow alias, the JSON export and the cycle report."""

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from ffe_dagster.assets.loading import load_level_data
from ffe_dagster.config import Universe
from ffe_dagster.core.data.bars import interval_to_timedelta
from ffe_dagster.core.promotion.config import PromotionConfig, Stage, describe_promotion
from ffe_dagster.core.promotion.records import Action, RegimeAction
from ffe_dagster.core.regimes.detection import RegimeConfig, confirmed_regime
from ffe_dagster.core.study.level_specs import CurriculumSpec
from ffe_dagster.core.study.levels import entry_strategy
from ffe_dagster.promotion.candidates import level_block as level_block  # re-exported
from ffe_dagster.promotion.candidates import regime_candidates
from ffe_dagster.promotion.cycle_report import publish_cycle_report
from ffe_dagster.promotion.decisions import DecisionRow
from ffe_dagster.promotion.export import publish_current
from ffe_dagster.promotion.live_results import read_live_results
from ffe_dagster.promotion.state_machine import Market, RegimeCandidates, run_promotion_cycle
from ffe_dagster.promotion.verdicts import announce_verdict_changes
from ffe_dagster.resources.registry import ParameterRegistryResource
from ffe_dagster.resources.tracking import MlflowTrackingResource
from ffe_dagster.resources.tracking_cycles import cycle_ref
from ffe_dagster.resources.warehouse import WarehouseResource
from ffe_dagster.sources.files import curriculum_signals
from ffe_dagster.triggers import run_trigger


def _regime_candidates(
    warehouse: WarehouseResource, curriculum: CurriculumSpec
) -> list[RegimeCandidates]:
    # Kept for benchmarks/integrity_run.py, which reads candidates from a warehouse.
    return regime_candidates(curriculum, warehouse.latest_level_result)


def _active_regimes(warehouse: WarehouseResource, universe: Universe) -> dict[str, str | None]:
    # The confirmed regime of every instrument (persistence and confidence filter whipsaws);
    # None where none is confirmed, so the export still tells the trading system what to use.
    out: dict[str, str | None] = {}
    for inst in universe.instruments:
        regime = confirmed_regime(warehouse.read_regimes(inst.key), RegimeConfig())
        out[inst.key] = None if regime is None else regime.value
    return out


def _markdown(rows: Sequence[DecisionRow]) -> str:
    if not rows:
        return "no decision this cycle"
    lines = ["| regime | version | stage | decision | reasons |", "|---|---|---|---|---|"]
    for r in rows:
        version = "" if r.version is None else f"v{r.version}"
        reason = r.reason.replace("|", "/")
        lines.append(f"| {r.regime} | {version} | {r.stage} | {r.decision} | {reason} |")
    return "\n".join(lines)


def build_promotion_asset(
    curriculum: CurriculumSpec,
    universe: Universe,
    export_path: Path,
    live_results_dir: Path,
    config: PromotionConfig | None = None,
) -> AssetsDefinition:
    """The ``promoted_parameters`` asset over every level of the curriculum."""
    config = config or PromotionConfig()
    longest = max(config.cold.window_days, default=0)
    if longest > curriculum.holdout_days:
        raise ValueError(
            f"the COLD window of {longest} days reaches into bars the studies saw: the "
            f"curriculum holds out only {curriculum.holdout_days} days"
        )
    level_directions = {spec.level: spec.direction for spec in curriculum.levels}

    @asset(
        deps=[lv.asset for lv in curriculum.levels],
        group_name="promotion",
        kinds={"sql", "json"},
        description=describe_promotion(config),
    )
    def promoted_parameters(
        context: AssetExecutionContext,
        warehouse: WarehouseResource,
        registry: ParameterRegistryResource,
        mlflow_tracking: MlflowTrackingResource,
    ) -> MaterializeResult:
        """The current parameters per regime, promoted through COLD -> WARM -> LIMITED -> FULL;
        the UI description, with every limit, is composed from ``config``."""
        with warehouse.session():  # one connection for the reads before the decisions
            data = load_level_data(
                warehouse, universe, curriculum.holdout_days, signals=curriculum_signals(curriculum)
            )
            candidates = _regime_candidates(warehouse, curriculum)
            active = _active_regimes(warehouse, universe)
            level_results = [
                r for spec in curriculum.levels if (r := warehouse.latest_level_result(spec.level))
            ]
        market = Market(
            bars=data.bars,
            periods_per_year=data.periods_per_year,
            strategy=entry_strategy(curriculum, data.signals),
            costs=curriculum.costs,
            bar_period=interval_to_timedelta(universe.bar_interval),
        )
        report = run_promotion_cycle(
            registry,
            regimes=candidates,
            market=market,
            live=read_live_results(live_results_dir),
            now=datetime.now(UTC),
            config=config,
            level_directions=level_directions,
            trigger=run_trigger(context.run.tags),
            run_id=context.run.run_id,
        )
        for note in announce_verdict_changes(registry, warehouse, curriculum):
            context.log.info(note.text)
        for row in report.rows:
            version = "" if row.version is None else f" v{row.version}"
            context.log.info(f"{row.regime}{version} {row.stage} {row.decision}: {row.reason}")
        # Nothing is promoted or reported before every level's MLflow run is logged in full (a
        # level's logging may still be running in the tracking worker).
        mlflow_tracking.require_finished(
            [r.mlflow_run_id for r in level_results if r.mlflow_run_id]
        )
        payload = publish_current(
            registry,
            mlflow_tracking,
            export_path,
            context.run.run_id,
            report.changes,
            config.limited,
            active=active,
        )
        level_of = {g: spec.level for spec in curriculum.levels for g in spec.promotes}
        summary = {
            row.regime: {
                "level": level_of.get(row.regime),
                "version": row.version,
                "stage": row.stage,
                "decision": row.decision,
                "reason": row.reason,
            }
            for row in report.rows
            if row.stage is Stage.COLD
        }
        report_meta = publish_cycle_report(
            mlflow_tracking,
            level_results,
            summary,
            cycle_ref(context.run.tags, context.run.run_id),
            promotes={spec.level: list(spec.promotes) for spec in curriculum.levels},
            decisions=_markdown(report.rows),
        )
        return MaterializeResult(
            metadata={
                **report_meta,
                "export_path": MetadataValue.path(str(export_path)),
                "promoted": sum(c.action is Action.PROMOTE for c in report.changes),
                "rolled_back": sum(
                    c.action in (Action.ROLLBACK, Action.SUSPEND) for c in report.changes
                ),
                "blocked": sum(c.action is RegimeAction.BLOCKED for c in report.changes),
                "decisions": MetadataValue.md(_markdown(report.rows)),
                "current": MetadataValue.json(payload["regimes"]),
                "active": MetadataValue.json(payload["active"]),
                "limited": MetadataValue.json(payload["limited"]),
            }
        )

    return promoted_parameters
