"""The run side (deploy/executors/celery.yaml) and the worker side
(deploy/celery/dagster_celery_config.py) of the Celery settings agree, and the run config is valid
for the cluster's job (no servers needed)."""

import importlib.util
from pathlib import Path

import pytest
import yaml
from dagster import validate_run_config

from ffe_dagster.cluster import build_cluster_definitions
from ffe_dagster.config.settings import Settings
from ffe_dagster.jobs.study_workers import JOB_NAME
from ffe_dagster.local_cluster import RUN_CONFIG, WORKER_CONFIG_DIR, run_config


def test_worker_settings_match_the_run_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_CELERY_BROKER_URL", "redis://:pw@broker:6379/0")
    monkeypatch.setenv("DAGSTER_CELERY_BACKEND_URL", "redis://:pw@broker:6379/1")
    spec = importlib.util.spec_from_file_location(
        "dagster_celery_config", WORKER_CONFIG_DIR / "dagster_celery_config.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    execution = yaml.safe_load(RUN_CONFIG.read_text())["execution"]["config"]
    for key, value in execution["config_source"].items():
        assert getattr(module, key) == value, key
    assert module.broker_url.endswith("/0") and module.result_backend.endswith("/1")
    assert execution["broker"] == {"env": "DAGSTER_CELERY_BROKER_URL"}


def test_the_run_config_is_valid_for_the_cluster_job(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FFE_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("DAGSTER_CELERY_BROKER_URL", "redis://:pw@broker:6379/0")
    monkeypatch.setenv("DAGSTER_CELERY_BACKEND_URL", "redis://:pw@broker:6379/1")
    job = build_cluster_definitions(Settings.from_env()).resolve_job_def(JOB_NAME)
    assert job.executor_def.name == "celery"
    validate_run_config(job, run_config(level=1, workers=2, trials=8))
    bad = run_config(level=1, workers=2)
    bad["execution"]["config"]["brokr"] = "x"
    with pytest.raises(Exception, match="brokr"):
        validate_run_config(job, bad)
