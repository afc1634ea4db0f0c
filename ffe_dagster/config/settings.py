"""Typed settings, read from the environment once (in ``definitions.build_definitions``).

Every path defaults to the project-local ``var/`` folder so a clone runs with no setup; each can be
moved with an environment variable (documented in README.md, "Configuration").
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent  # the bundled YAML files
PACKAGE_DIR = CONFIG_DIR.parent
PROJECT_DIR = PACKAGE_DIR.parent
TRIAL_PROFILES = ("quick", "full")
WEBHOOK_ENV = "FFE_WEBHOOK_URL"  # read by definitions.py through EnvVar; checked here when set
NOTIFY_REQUIRED_ENV = "FFE_NOTIFY_REQUIRED"


@dataclass(frozen=True, slots=True)
class Settings:
    """Where things live and how big a cycle is."""

    var_dir: Path
    samples_dir: Path
    curriculum_path: Path
    universe_path: Path
    promotion_path: Path
    warehouse_path: Path
    studies_url: str
    registry_url: str
    mlflow_tracking_uri: str
    mlflow_artifact_dir: Path
    mlflow_experiment: str
    export_dir: Path
    trial_profile: str
    cycle_cron: str
    notify_required: bool = False  # FFE_NOTIFY_REQUIRED: refuse to load without a webhook
    notify_stall_minutes: float = 60.0  # then pause LIMITED / FULL after this long undelivered
    dagster_ui_url: str = "http://127.0.0.1:3000"  # base of the links in notifications
    mlflow_ui_url: str = "http://127.0.0.1:5000"
    mlflow_worker: bool = True  # FFE_MLFLOW_WORKER: a run's MLflow logging in a helper process

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Build settings from ``env`` (default ``os.environ``), validating what it reads.

        Every problem is reported at once, as one ``ConfigError`` (a ``ValueError``) naming the
        variables; no message shows a password or a webhook's path.
        """
        # Imported here so that ``import ffe_dagster.config.settings`` (for PROJECT_DIR) stays
        # light.
        from ffe_dagster.config.environment import (
            check_cron,
            check_flag,
            check_mlflow_uri,
            check_notify,
            check_sql_url,
            check_studies_url,
            check_webhook_url,
        )
        from ffe_dagster.config.errors import Problems

        env = os.environ if env is None else env
        problems = Problems()
        var_dir = Path(env.get("FFE_VAR_DIR", str(PROJECT_DIR / "var"))).resolve()
        # docs/spec.md §4's trial counts by default; `quick` is for tests and trying things.
        profile = env.get("FFE_TRIAL_PROFILE", "full")
        problems.one_of("FFE_TRIAL_PROFILE", profile, TRIAL_PROFILES)
        studies_url = env.get(
            "FFE_STUDIES_URL", f"journal:///{var_dir / 'optuna' / 'studies.journal'}"
        )
        check_studies_url("FFE_STUDIES_URL", studies_url, problems)
        # The registry shares the Optuna database when that is one (PostgreSQL in production);
        # next to a journal file it gets its own SQLite file.
        registry_default = (
            f"sqlite:///{var_dir / 'optuna' / 'registry.db'}"
            if studies_url.startswith("journal:")
            else studies_url  # a journal+postgresql URL names the database under the journal
        )
        registry_url = env.get("FFE_REGISTRY_URL", registry_default)
        if "FFE_REGISTRY_URL" in env:  # the defaults are a local file or the checked studies URL
            check_sql_url("FFE_REGISTRY_URL", registry_url, problems)
        mlflow_dir = var_dir / "mlflow"
        tracking_uri = env.get("MLFLOW_TRACKING_URI", f"sqlite:///{mlflow_dir / 'mlflow.db'}")
        check_mlflow_uri("MLFLOW_TRACKING_URI", tracking_uri, problems)
        if env.get(WEBHOOK_ENV):
            check_webhook_url(WEBHOOK_ENV, env[WEBHOOK_ENV], problems)
        notify = check_notify(env, WEBHOOK_ENV, problems)
        mlflow_worker = check_flag("FFE_MLFLOW_WORKER", env, True, problems)
        cycle_cron = env.get("FFE_CYCLE_CRON", "0 */6 * * *")
        check_cron("FFE_CYCLE_CRON", cycle_cron, problems)
        experiment = env.get("FFE_MLFLOW_EXPERIMENT", "ffe_curriculum")
        if not experiment.strip():
            problems.add("FFE_MLFLOW_EXPERIMENT must not be empty")
        problems.raise_if_any("environment")
        return cls(
            var_dir=var_dir,
            samples_dir=Path(env.get("FFE_SAMPLES_DIR", str(PACKAGE_DIR / "data" / "samples"))),
            curriculum_path=Path(env.get("FFE_CURRICULUM", str(CONFIG_DIR / "curriculum.yaml"))),
            universe_path=Path(env.get("FFE_UNIVERSE", str(CONFIG_DIR / "universe.yaml"))),
            promotion_path=Path(env.get("FFE_PROMOTION", str(CONFIG_DIR / "promotion.yaml"))),
            warehouse_path=Path(env.get("FFE_WAREHOUSE", str(var_dir / "warehouse.duckdb"))),
            studies_url=studies_url,
            registry_url=registry_url,
            mlflow_tracking_uri=tracking_uri,
            mlflow_artifact_dir=Path(
                env.get("FFE_MLFLOW_ARTIFACTS", str(mlflow_dir / "artifacts"))
            ),
            mlflow_experiment=experiment,
            export_dir=Path(env.get("FFE_EXPORT_DIR", str(var_dir / "exports"))),
            trial_profile=profile,
            cycle_cron=cycle_cron,
            notify_required=notify.required,
            notify_stall_minutes=notify.stall_minutes,
            dagster_ui_url=notify.dagster_ui_url,
            mlflow_ui_url=notify.mlflow_ui_url,
            mlflow_worker=mlflow_worker,
        )
