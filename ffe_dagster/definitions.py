"""The one place Definitions are assembled; the environment is read here, once."""

import os
from datetime import timedelta

from dagster import Definitions, EnvVar, definitions
from dagster._utils.schedules import cron_string_iterator

from ffe_dagster.assets.curriculum import build_curriculum_assets
from ffe_dagster.assets.ingestion import build_ingestion_assets
from ffe_dagster.assets.market_regimes import build_regime_asset
from ffe_dagster.config import load_curriculum, load_promotion, load_universe, require_credentials
from ffe_dagster.config.settings import WEBHOOK_ENV, Settings
from ffe_dagster.core.reporting.notifications import UiLinks
from ffe_dagster.jobs import build_jobs, build_rollback_job, build_study_workers_job
from ffe_dagster.partitions import bar_partitions, instrument_partitions
from ffe_dagster.promotion.asset import build_promotion_asset
from ffe_dagster.resources.market_data import market_data_resource
from ffe_dagster.resources.registry import ParameterRegistryResource
from ffe_dagster.resources.studies import OptunaStorageResource
from ffe_dagster.resources.tracking import MlflowTrackingResource
from ffe_dagster.resources.warehouse import WarehouseResource
from ffe_dagster.resources.webhook import WebhookResource
from ffe_dagster.schedules import build_cycle_schedule
from ffe_dagster.sensors import build_regime_sensor
from ffe_dagster.sensors.cycle import build_cycle_chain_sensor
from ffe_dagster.sensors.failure import build_failure_sensor, with_freshness
from ffe_dagster.sensors.notify import build_notify_sensor, outbox_asset_spec

EXPORT_FILE = "promoted_parameters.json"
LIVE_DIR = "live_results"  # where the trading system reports LIMITED / FULL results


def build_definitions(settings: Settings | None = None) -> Definitions:
    """Assets, jobs, schedule, sensor and resources for ``settings`` (default: environment)."""
    settings = settings or Settings.from_env()
    universe = load_universe(settings.universe_path)
    # A source's secret is checked now, at load, not when the first run reaches the venue.
    require_credentials(universe)
    curriculum = load_curriculum(settings.curriculum_path)
    promotion = load_promotion(settings.promotion_path)
    bars_partitions = bar_partitions(universe)
    assets = [
        *build_ingestion_assets(universe, bars_partitions),
        build_regime_asset(instrument_partitions(universe)),
        *build_curriculum_assets(curriculum, universe, settings.trial_profile),
        build_promotion_asset(
            curriculum,
            universe,
            settings.export_dir / EXPORT_FILE,
            settings.var_dir / LIVE_DIR,
            promotion,
        ),
    ]
    jobs = build_jobs()
    links = UiLinks(dagster=settings.dagster_ui_url, mlflow=settings.mlflow_ui_url)
    fresh_keys = {spec.asset for spec in curriculum.levels} | {"promoted_parameters"}
    interval = cycle_interval(settings.cycle_cron)
    return Definitions(
        assets=[*(with_freshness(a, fresh_keys, interval) for a in assets), outbox_asset_spec()],
        jobs=[
            *jobs,
            build_rollback_job(settings.export_dir / EXPORT_FILE, promotion.limited),
            build_study_workers_job(curriculum, universe, settings.trial_profile),
        ],
        schedules=[build_cycle_schedule(bars_partitions, settings.cycle_cron)],
        sensors=[
            build_regime_sensor(universe, curriculum),
            build_cycle_chain_sensor(jobs, [i.key for i in universe.instruments]),
            build_failure_sensor(links),
            build_notify_sensor(links),
        ],
        resources={
            "warehouse": WarehouseResource(path=str(settings.warehouse_path)),
            "market_data": market_data_resource(universe, settings.samples_dir),
            # URLs may embed a database password: when they come from the environment, pass them
            # as EnvVar so the UI and run records show the variable's name, never its value.
            "optuna_storage": OptunaStorageResource(
                url=_from_env(settings.studies_url, "FFE_STUDIES_URL")
            ),
            "registry": ParameterRegistryResource(
                url=_from_env(settings.registry_url, "FFE_REGISTRY_URL", "FFE_STUDIES_URL"),
                notify_required=settings.notify_required,
                notify_stall_minutes=settings.notify_stall_minutes,
            ),
            # The URL may embed a token: read through EnvVar so it never shows in the UI.
            "webhook": WebhookResource(
                url=EnvVar(WEBHOOK_ENV) if os.environ.get(WEBHOOK_ENV) else ""
            ),
            "mlflow_tracking": MlflowTrackingResource(
                tracking_uri=_from_env(settings.mlflow_tracking_uri, "MLFLOW_TRACKING_URI"),
                artifact_dir=str(settings.mlflow_artifact_dir),
                experiment=settings.mlflow_experiment,
                use_worker=settings.mlflow_worker,
            ),
        },
    )


def _from_env(value: str, *names: str) -> str | EnvVar:
    """``EnvVar(name)`` for the first variable in ``names`` holding exactly ``value``, else the
    plain value (a default, or settings built from a mapping other than the environment)."""
    for name in names:
        if os.environ.get(name) == value:
            return EnvVar(name)
    return value


def cycle_interval(cron: str) -> timedelta:
    """The time between two fires of ``cron`` (the cycle interval, 6 hours by default)."""
    fires = cron_string_iterator(0.0, cron, "UTC")
    first = next(fires)
    return next(fires) - first


@definitions
def defs() -> Definitions:
    """Loaded by ``dagster dev`` / ``dagster-webserver`` through workspace.yaml."""
    return build_definitions()
