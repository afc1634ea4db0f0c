"""Jobs of the cycle: ingest (partitioned bars), regimes, the optimization chain, and the manual
rollback of promoted parameters; ``study_workers_job`` (many Optuna workers on one level's study)
lives in ``study_workers``."""

from pathlib import Path
from typing import Any

from dagster import (
    AssetKey,
    AssetMaterialization,
    AssetSelection,
    Config,
    JobDefinition,
    MetadataValue,
    OpExecutionContext,
    define_asset_job,
    job,
    op,
)
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)

from ffe_dagster.core.promotion.config import LimitedGateConfig, PromotionRegime
from ffe_dagster.core.promotion.records import Action, Trigger
from ffe_dagster.core.promotion.registry_protocol import PromotionRegistry
from ffe_dagster.jobs.study_workers import build_study_workers_job as build_study_workers_job
from ffe_dagster.promotion.decisions import CurrentChange
from ffe_dagster.promotion.export import publish_current
from ffe_dagster.resources.registry import ParameterRegistryResource
from ffe_dagster.resources.tracking import MlflowTrackingResource

INGEST_ASSETS = AssetSelection.assets("raw_bars", "validated_bars")
REGIME_ASSETS = AssetSelection.assets("market_regimes")
OPTIMIZATION_ASSETS = AssetSelection.groups("curriculum", "promotion")


def build_jobs() -> list[UnresolvedAssetJobDefinition]:
    """``ingest_job``, ``regimes_job`` and ``optimization_job``."""
    return [
        define_asset_job(
            "ingest_job",
            selection=INGEST_ASSETS,  # partitioned as its assets are (day x instrument)
            description="Fetch and validate bars for day x instrument partitions.",
        ),
        define_asset_job(
            "regimes_job",
            selection=REGIME_ASSETS,
            description="Detect market regimes per instrument over the validated history.",
        ),
        define_asset_job(
            "optimization_job",
            selection=OPTIMIZATION_ASSETS,
            description="Run the curriculum of studies level 1 -> 4 and the promotion gates.",
            tags={"ffe/trigger": Trigger.MANUAL.value},
        ),
    ]


class RollbackConfig(Config):
    """Which regime to roll back (BULL, BEAR, SIDEWAYS or DEFAULT), why (stored with the
    transition), and optionally to which version (one that was current before; by default the
    one promoted before the current version)."""

    regime: PromotionRegime
    reason: str
    to_version: int | None = None


def manual_rollback(
    registry: PromotionRegistry,
    mlflow_tracking: MlflowTrackingResource,
    export_path: Path,
    limited: LimitedGateConfig,
    *,
    regime: str,
    reason: str,
    to_version: int | None,
    run_id: str,
) -> tuple[int | None, int, dict[str, Any]]:
    """Roll ``regime`` back (trigger ``manual``) and re-export; returns the version that was
    current before, the restored one, and the export written."""
    if not reason.strip():
        raise ValueError("a manual rollback needs a reason for the audit trail")
    current = registry.current(regime)
    previous = None if current is None else current.version
    restored = registry.rollback(
        regime, reason=reason, trigger=Trigger.MANUAL, run_id=run_id, to_version=to_version
    )
    change = CurrentChange(regime, Action.ROLLBACK, restored, previous, reason, Trigger.MANUAL)
    payload = publish_current(registry, mlflow_tracking, export_path, run_id, [change], limited)
    return previous, restored, payload


def build_rollback_job(
    export_path: Path, limited: LimitedGateConfig | None = None
) -> JobDefinition:
    """``rollback_job``: a manual rollback through the registry, then a fresh export."""
    limited = limited or LimitedGateConfig()

    @op(name="rollback_parameters")
    def rollback_parameters(
        context: OpExecutionContext,
        config: RollbackConfig,
        registry: ParameterRegistryResource,
        mlflow_tracking: MlflowTrackingResource,
    ) -> int:
        """Make an earlier version of the regime current again (trigger ``manual``, this run's
        id), re-export the parameters for the trading system and return the restored version."""
        regime = config.regime.value
        previous, restored, payload = manual_rollback(
            registry,
            mlflow_tracking,
            export_path,
            limited,
            regime=regime,
            reason=config.reason,
            to_version=config.to_version,
            run_id=context.run_id,
        )
        context.log.info(f"{regime}: v{previous} -> v{restored} ({config.reason})")
        context.log_event(
            AssetMaterialization(
                asset_key=AssetKey("promoted_parameters"),
                description=f"manual rollback of {regime} to v{restored}",
                metadata={
                    "export_path": MetadataValue.path(str(export_path)),
                    "regime": regime,
                    "from_version": previous if previous is not None else "none",
                    "to_version": restored,
                    "reason": config.reason,
                    "current": MetadataValue.json(payload["regimes"]),
                },
            )
        )
        return restored

    @job(
        name="rollback_job",
        description="Manual rollback of one regime's parameters to an earlier version, recorded "
        "with trigger 'manual' and re-exported for the trading system.",
        tags={"ffe/trigger": Trigger.MANUAL.value},
    )
    def rollback_job() -> None:
        rollback_parameters()

    return rollback_job
