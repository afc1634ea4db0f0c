"""What follows a change of current version: the MLflow alias and the JSON export for the
trading system (written atomically)."""

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ffe_dagster.core.promotion.config import LimitedGateConfig, PromotionRegime, Stage
from ffe_dagster.core.promotion.records import Action, ParameterVersion, RegimeAction
from ffe_dagster.core.promotion.registry_protocol import PromotionRegistry
from ffe_dagster.promotion.decisions import CurrentChange
from ffe_dagster.resources.tracking import MlflowTrackingResource
from ffe_dagster.resources.tracking_runs import ensure_writable_folder

EXPORT_SCHEMA = "ffe_dagster.promoted_parameters/1"
NO_CONFIRMED_REGIME = (
    "no regime is confirmed at the newest bar (a regime counts once it has persisted long "
    "enough with enough confidence); trade the DEFAULT set"
)


def ensure_export_writable(path: Path) -> None:
    """Raise a clear ``FolderNotWritableError`` naming the folder of the export file ``path``
    and the OS reason when it cannot be written (the file itself is not touched)."""
    ensure_writable_folder(path.parent, "export folder", "set FFE_EXPORT_DIR to a writable folder")


def _export_entry(row: ParameterVersion) -> dict[str, Any]:
    return {
        "version": row.version,
        "level": row.level,
        "direction": None if row.direction is None else row.direction.value,
        "stage": row.stage.value,
        "params": dict(row.params),
        "cold_metrics": dict(row.metrics),
        "since": row.since.isoformat(),
        "by_run": row.stage_run_id or row.run_id,
        "mlflow_model_version": row.mlflow_model_version,
    }


def _active_entry(regime: str | None, regimes: Mapping[str, Any]) -> dict[str, Any]:
    if regime is None:
        return {
            "regime": None,
            "use": PromotionRegime.DEFAULT.value,
            "reason": NO_CONFIRMED_REGIME,
        }
    if regimes.get(regime) is None:
        return {
            "regime": regime,
            "use": PromotionRegime.DEFAULT.value,
            "reason": f"no {regime} set is current yet",
        }
    return {"regime": regime, "use": regime}


def export_current(
    registry: PromotionRegistry,
    path: Path,
    run_id: str,
    limited: LimitedGateConfig,
    changes: Sequence[CurrentChange] = (),
    active: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    """Write the parameters per regime as JSON for the trading system, atomically.

    ``active`` maps every instrument of the universe to its confirmed market regime, or None
    when none is confirmed; the export then says which set the trading system should use per
    instrument (the regime's current set, else DEFAULT, with the reason when no regime is
    confirmed). Without it (a manual rollback) the previous file's mapping is kept.

    ``regimes`` holds the current (FULL) set of each regime, or null; ``limited`` the set the
    trading system should trade with ``capital_fraction`` of that regime's capital from
    ``since`` (judged from ``judge_after``), or null; ``changes`` what this run changed
    (promotions, rollbacks, suspensions) and why.
    """
    regimes: dict[str, Any] = {}
    trials: dict[str, Any] = {}
    for regime in PromotionRegime:
        current = registry.current(regime.value)
        regimes[regime.value] = None
        if current is not None:
            entry = _export_entry(current)
            regimes[regime.value] = {
                **entry,
                "promoted_at": entry["since"],
                "promoted_by_run": entry["by_run"],
            }
        live = [r for r in registry.in_flight(regime.value) if r.stage is Stage.LIMITED]
        trials[regime.value] = None
        if live:
            judge_after = live[0].since + timedelta(hours=limited.min_hours)
            trials[regime.value] = {
                **_export_entry(live[0]),
                "capital_fraction": limited.capital_fraction,
                "judge_after": judge_after.isoformat(),
            }
    if active is None and path.exists():
        previous = json.loads(path.read_text()).get("active", {})
        active = {k: v["regime"] for k, v in previous.items()}
    payload = {
        "schema": EXPORT_SCHEMA,
        "generated_at": datetime.now(UTC).isoformat(),
        "dagster_run_id": run_id,
        "regimes": regimes,
        "active": {
            instrument: _active_entry(regime, regimes)
            for instrument, regime in sorted((active or {}).items())
        },
        "limited": trials,
        "changes": [
            {
                "regime": c.regime,
                "action": c.action,
                "version": c.version,
                "previous": c.previous,
                "reason": c.reason,
                "trigger": c.trigger,
            }
            for c in changes
        ],
    }
    ensure_export_writable(path)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)  # atomic: the trading system never reads a half-written file
    return payload


def publish_current(
    registry: PromotionRegistry,
    mlflow_tracking: MlflowTrackingResource,
    path: Path,
    run_id: str,
    changes: Sequence[CurrentChange],
    limited: LimitedGateConfig,
    active: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    """Everything outside the registry that follows the current versions, after the
    ``changes`` of a cycle or of a manual rollback: the MLflow model-registry alias of each
    changed regime, then the JSON export for the trading system.

    This is the one place a change of current version leaves the project (the promotion asset
    and ``rollback_job`` both end here). An export folder that cannot be written fails first,
    before the MLflow aliases move, so MLflow and the export never disagree because of it.
    """
    ensure_export_writable(path)
    for change in changes:
        if change.action is RegimeAction.BLOCKED:
            continue  # a level that did not pass changed nothing: no alias moves
        row = registry.current(change.regime)
        if change.action is Action.SUSPEND or row is None:
            mlflow_tracking.clear_current(regime=change.regime)
        elif change.action is Action.ROLLBACK and row.mlflow_model_version is not None:
            mlflow_tracking.set_current(
                regime=change.regime, model_version=row.mlflow_model_version
            )
        else:  # a promotion, or a restored version that was never registered
            model_version = mlflow_tracking.register_promotion(
                regime=change.regime,
                params=dict(row.params),
                metrics=dict(row.metrics),
                source_run_id=row.source_run_id,
                description=change.reason,
                registry_version=row.version,
                level=row.level,
                dagster_run_id=run_id,
            )
            registry.set_mlflow_model_version(change.regime, row.version, model_version)
    return export_current(registry, path, run_id, limited, changes, active)
