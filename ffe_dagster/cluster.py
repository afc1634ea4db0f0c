"""``study_workers_job`` on Dagster's Celery executor: the code location of a cluster.

The job is the one of ``ffe_dagster.definitions`` (same ops, same run config) built with
``dagster_celery.celery_executor``; the plan op, the only reader of the DuckDB warehouse, goes to
the Celery queue of the machine that holds it, and op outputs go to a folder every worker mounts
(``FFE_SHARED_DIR``). Every Celery worker imports this module when it runs a step (the task names
``ffe_dagster.cluster:cluster_study_workers_job``), with its own environment: deploy/WORKERS.md
lists what each machine sets. ``make run-cluster`` runs it on this machine
(``ffe_dagster.local_cluster``).
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dagster import Definitions, EnvVar, JobDefinition, definitions
from dagster_celery import celery_executor

from ffe_dagster.config import load_curriculum, load_universe
from ffe_dagster.config.settings import Settings
from ffe_dagster.definitions import build_definitions
from ffe_dagster.jobs.study_workers import JOB_NAME, build_study_workers_job
from ffe_dagster.resources.optuna_storage import GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S
from ffe_dagster.resources.shared_storage import SHARED_DIR_ENV, shared_folder_io_manager
from ffe_dagster.resources.studies import OptunaStorageResource

QUEUE_TAG = "dagster-celery/queue"
DEFAULT_QUEUE = "dagster"  # dagster-celery's queue for every step without a queue tag
WAREHOUSE_QUEUE = "ffe_warehouse"


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """What the cluster adds to :class:`Settings`, from the environment.

    ``shared_dir``: ``FFE_SHARED_DIR``, the folder for op outputs (default ``$FFE_VAR_DIR/shared``,
    which only works while every worker is on this machine). ``warehouse_queue``:
    ``FFE_WAREHOUSE_QUEUE``, the Celery queue of the warehouse machine. The study's heartbeats
    (``FFE_HEARTBEAT_INTERVAL_S``, ``FFE_GRACE_PERIOD_S``) default to 10 s / 30 s as in
    ``open_storage``.
    """

    shared_dir: Path
    shared_dir_from_env: bool
    warehouse_queue: str
    heartbeat_interval_s: int
    grace_period_s: int

    @classmethod
    def from_env(
        cls, settings: Settings, env: Mapping[str, str] | None = None
    ) -> "ClusterSettings":
        """Read the variables once; refuse a grace period not longer than the heartbeat."""
        env = os.environ if env is None else env
        interval = int(env.get("FFE_HEARTBEAT_INTERVAL_S", HEARTBEAT_INTERVAL_S))
        grace = int(env.get("FFE_GRACE_PERIOD_S", GRACE_PERIOD_S))
        if interval < 1 or grace <= interval:
            raise ValueError(
                f"FFE_GRACE_PERIOD_S ({grace}) must exceed FFE_HEARTBEAT_INTERVAL_S ({interval}) "
                ">= 1: a live worker would otherwise see its trials failed between two beats"
            )
        return cls(
            shared_dir=Path(env.get(SHARED_DIR_ENV, str(settings.var_dir / "shared"))),
            shared_dir_from_env=SHARED_DIR_ENV in env,
            warehouse_queue=env.get("FFE_WAREHOUSE_QUEUE", WAREHOUSE_QUEUE),
            heartbeat_interval_s=interval,
            grace_period_s=grace,
        )


def build_cluster_definitions(
    settings: Settings | None = None, cluster: ClusterSettings | None = None
) -> Definitions:
    """The Celery ``study_workers_job`` with the resources of ``build_definitions`` plus the
    shared IO manager and the cluster's heartbeat settings."""
    settings = settings or Settings.from_env()
    cluster = cluster or ClusterSettings.from_env(settings)
    base = build_definitions(settings)
    job = build_study_workers_job(
        load_curriculum(settings.curriculum_path),
        load_universe(settings.universe_path),
        settings.trial_profile,
        executor_def=celery_executor,
        plan_op_tags={QUEUE_TAG: cluster.warehouse_queue},
    )
    studies_url = (
        EnvVar("FFE_STUDIES_URL")
        if os.environ.get("FFE_STUDIES_URL") == settings.studies_url
        else settings.studies_url
    )
    return Definitions(
        jobs=[job],
        resources={
            **(base.resources or {}),
            "optuna_storage": OptunaStorageResource(
                url=studies_url,
                heartbeat_interval_s=cluster.heartbeat_interval_s,
                grace_period_s=cluster.grace_period_s,
            ),
            # Each process reads its own FFE_SHARED_DIR, so machines may mount it differently.
            "io_manager": shared_folder_io_manager(
                EnvVar(SHARED_DIR_ENV) if cluster.shared_dir_from_env else str(cluster.shared_dir)
            ),
        },
    )


def cluster_study_workers_job() -> JobDefinition:
    """The job, rebuilt from the environment by the run's process and by every Celery worker."""
    return build_cluster_definitions().resolve_job_def(JOB_NAME)


@definitions
def defs() -> Definitions:
    """A second code location (workspace.yaml ``python_module: ffe_dagster.cluster``)."""
    return build_cluster_definitions()
