"""The one place Definitions are assembled; the environment is read here, once."""

from dagster import Definitions, definitions

from ffe_dagster.assets.curriculum import build_curriculum_assets
from ffe_dagster.assets.ingestion import build_ingestion_assets
from ffe_dagster.assets.promotion import build_promotion_asset
from ffe_dagster.assets.regimes import build_regime_asset
from ffe_dagster.config import load_curriculum, load_universe
from ffe_dagster.jobs import build_jobs
from ffe_dagster.partitions import bar_partitions, instrument_partitions
from ffe_dagster.resources.market_data import MarketDataResource
from ffe_dagster.resources.registry import ParameterRegistryResource
from ffe_dagster.resources.studies import OptunaStorageResource
from ffe_dagster.resources.tracking import MlflowTrackingResource
from ffe_dagster.resources.warehouse import WarehouseResource
from ffe_dagster.schedules import build_cycle_schedule
from ffe_dagster.sensors import build_regime_sensor
from ffe_dagster.settings import Settings

EXPORT_FILE = "promoted_parameters.json"


def build_definitions(settings: Settings | None = None) -> Definitions:
    """Assets, jobs, schedule, sensor and resources for ``settings`` (default: environment)."""
    settings = settings or Settings.from_env()
    universe = load_universe(settings.universe_path)
    curriculum = load_curriculum(settings.curriculum_path)
    bars_partitions = bar_partitions(universe)
    assets = [
        *build_ingestion_assets(universe, bars_partitions),
        build_regime_asset(instrument_partitions(universe)),
        *build_curriculum_assets(curriculum, universe, settings.trial_profile),
        build_promotion_asset(curriculum, universe, settings.export_dir / EXPORT_FILE),
    ]
    return Definitions(
        assets=assets,
        jobs=build_jobs(bars_partitions),
        schedules=[build_cycle_schedule(bars_partitions, settings.cycle_cron)],
        sensors=[build_regime_sensor(universe)],
        resources={
            "warehouse": WarehouseResource(path=str(settings.warehouse_path)),
            "market_data": MarketDataResource(
                directory=str(settings.samples_dir), files=dict(universe.files)
            ),
            "optuna_storage": OptunaStorageResource(url=settings.studies_url),
            "registry": ParameterRegistryResource(url=settings.registry_url),
            "mlflow_tracking": MlflowTrackingResource(
                tracking_uri=settings.mlflow_tracking_uri,
                artifact_dir=str(settings.mlflow_artifact_dir),
                experiment=settings.mlflow_experiment,
            ),
        },
    )


@definitions
def defs() -> Definitions:
    """Loaded by ``dagster dev`` / ``dagster-webserver`` through workspace.yaml."""
    return build_definitions()
