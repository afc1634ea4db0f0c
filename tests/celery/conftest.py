"""A real cluster for the Celery tests: a private PostgreSQL server (Dagster instance and Optuna
study), a private Redis broker, and two Celery worker processes of ``dagster_celery.app``, all
started here and stopped at the end of the module (``ffe_dagster.local_cluster``).

The data are those of ``tests/test_study_workers.py``: the bundled BTC/USDT hourly bars and their
detected regimes in a fresh warehouse, BTC/USDT alone in the universe. The curriculum's batches
are small (4) so a worker is inside a batch, its trials RUNNING, most of the time, and heartbeats
are short (1 s, stale after 4 s) so a killed worker's trials are failed within seconds.
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
import yaml
from dagster import DagsterInstance

from ffe_dagster.config.settings import PACKAGE_DIR, Settings
from ffe_dagster.core.regimes.detection import RegimeConfig, detect_regimes
from ffe_dagster.local_broker import BrokerUnavailable, RedisServer, running_redis
from ffe_dagster.local_cluster import CeleryWorker, celery_workers, cluster_env
from ffe_dagster.local_postgres import PostgresServer, PostgresUnavailable, running_postgres
from ffe_dagster.resources.warehouse import WarehouseResource

BATCH = 4
HEARTBEAT_S = 1
GRACE_S = 4


@dataclass(slots=True)
class Cluster:
    """The running cluster: servers, Celery workers, the Dagster instance and the settings."""

    postgres: PostgresServer
    broker: RedisServer
    workers: list[CeleryWorker]
    instance: DagsterInstance
    settings: Settings


def _write_inputs(root: Path) -> dict[str, str]:
    raw = yaml.safe_load((PACKAGE_DIR / "config" / "curriculum.yaml").read_text())
    raw["optimizer"]["batch_size"] = BATCH
    raw["optimizer"]["patience"] = 1000  # every test asks for an exact number of trials
    raw["progression"]["max_tries"] = 1
    (root / "curriculum.yaml").write_text(yaml.safe_dump(raw))
    universe = yaml.safe_load((PACKAGE_DIR / "config" / "universe.yaml").read_text())
    universe["instruments"] = [i for i in universe["instruments"] if i["key"] == "BTC_USDT"]
    (root / "universe.yaml").write_text(yaml.safe_dump(universe))
    return {
        "FFE_VAR_DIR": str(root / "var"),
        "FFE_CURRICULUM": str(root / "curriculum.yaml"),
        "FFE_UNIVERSE": str(root / "universe.yaml"),
        "FFE_TRIAL_PROFILE": "quick",
        "FFE_HEARTBEAT_INTERVAL_S": str(HEARTBEAT_S),
        "FFE_GRACE_PERIOD_S": str(GRACE_S),
    }


def _seed_warehouse(settings: Settings) -> None:
    bars = pl.read_parquet(PACKAGE_DIR / "data" / "samples" / "BTC_USDT_1h.parquet").select(
        "ts", "open", "high", "low", "close", "volume"
    )
    warehouse = WarehouseResource(path=str(settings.warehouse_path))
    start, end = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
    warehouse.replace_window("validated_bars", "BTC_USDT", start, end, bars)
    warehouse.replace_regimes("BTC_USDT", detect_regimes(bars, RegimeConfig()))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """PostgreSQL, Redis and two ready Celery workers with this module's environment."""
    root = tmp_path_factory.mktemp("cluster")
    try:
        with (
            running_postgres() as postgres,
            running_redis() as broker,
            pytest.MonkeyPatch.context() as mp,
        ):
            env = _write_inputs(root)
            env |= cluster_env(postgres, broker, root / "var")
            for key in ("FFE_WAREHOUSE", "FFE_REGISTRY_URL"):
                mp.delenv(key, raising=False)
            for key, value in env.items():
                mp.setenv(key, value)
            settings = Settings.from_env()
            _seed_warehouse(settings)
            with (
                celery_workers(dict(os.environ), 2, root / "celery") as workers,
                DagsterInstance.get() as instance,
            ):
                yield Cluster(postgres, broker, workers, instance, settings)
    except (PostgresUnavailable, BrokerUnavailable) as exc:
        pytest.fail(str(exc), pytrace=False)
