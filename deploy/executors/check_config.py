"""Check celery.yaml and k8s.yaml against the real executor and job config schemas.

Shape only: it builds ``study_workers_job`` with dagster-celery's and dagster-k8s's executors and
validates each file as run config (executor, ops, resources), then parses the Kubernetes volume
and pod-spec fragments into the kubernetes client's models. It starts no broker, pod or run.

dagster-celery is a project dependency (the cluster of deploy/WORKERS.md runs it); dagster-k8s is
not, so run this from a throwaway virtual environment that sees the project's packages (never
install dagster-k8s into .venv):

    python3.11 -m venv /tmp/execvenv
    echo "$PWD/.venv/lib/python3.11/site-packages" \
        > /tmp/execvenv/lib/python3.11/site-packages/project.pth
    /tmp/execvenv/bin/pip install dagster-celery==0.29.27 dagster-k8s==0.29.27
    DAGSTER_CELERY_BROKER_URL=redis://localhost:6379/0 \
        /tmp/execvenv/bin/python deploy/executors/check_config.py
"""

import sys
from pathlib import Path

import yaml
from dagster import DagsterInvalidConfigError, Definitions, validate_run_config  # noqa: TID251
from dagster_celery import celery_executor
from dagster_k8s import k8s_job_executor
from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict
from kubernetes.client import V1PodSpec, V1Volume, V1VolumeMount

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # the project root, for ffe_dagster

from ffe_dagster.config import load_curriculum, load_universe  # noqa: E402
from ffe_dagster.config.settings import Settings  # noqa: E402
from ffe_dagster.jobs.study_workers import JOB_NAME, build_study_workers_job  # noqa: E402
from ffe_dagster.resources.studies import OptunaStorageResource  # noqa: E402
from ffe_dagster.resources.warehouse import WarehouseResource  # noqa: E402


def main() -> None:
    settings = Settings.from_env()
    curriculum = load_curriculum(settings.curriculum_path)
    universe = load_universe(settings.universe_path)
    for name, executor, tags in (
        ("celery", celery_executor, {"dagster-celery/queue": "ffe_warehouse"}),
        ("k8s", k8s_job_executor, None),
    ):
        job = build_study_workers_job(
            curriculum, universe, "quick", executor_def=executor, plan_op_tags=tags
        )
        job = Definitions(
            jobs=[job],
            resources={
                "warehouse": WarehouseResource(path=str(settings.warehouse_path)),
                "optuna_storage": OptunaStorageResource(url="postgresql+psycopg2://u:p@db/ffe"),
            },
        ).resolve_job_def(JOB_NAME)
        config = yaml.safe_load((HERE / f"{name}.yaml").read_text())
        resolved = validate_run_config(job, config)
        print(f"{name}.yaml: valid; executor config {sorted(resolved['execution'])}")
        typo = {**config, "ops": {"plan_level_study": {"config": {"levle": 1}}}}
        try:
            validate_run_config(job, typo)
        except DagsterInvalidConfigError:
            print(f"{name}: a misspelt op config key is refused")
        else:
            raise SystemExit(f"{name}: a misspelt op config key was accepted")
        if name == "k8s":
            ex = config["execution"]["config"]
            for volume in ex["volumes"]:
                k8s_model_from_dict(V1Volume, k8s_snake_case_dict(V1Volume, volume))
            for mount in ex["volume_mounts"]:
                k8s_model_from_dict(V1VolumeMount, k8s_snake_case_dict(V1VolumeMount, mount))
            pod = {**ex["per_step_k8s_config"]["plan_level_study"]["pod_spec_config"]}
            spec = k8s_model_from_dict(
                V1PodSpec, k8s_snake_case_dict(V1PodSpec, {**pod, "containers": []})
            )
            print(f"k8s: volumes parse; plan pod node selector {spec.node_selector}")


if __name__ == "__main__":
    main()
