"""Typed settings, read from the environment once (in ``definitions.build_definitions``).

Every path defaults to the project-local ``var/`` folder so a clone runs with no setup; each can be
moved with an environment variable (documented in README.md, "Configuration").
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
TRIAL_PROFILES = ("quick", "full")


@dataclass(frozen=True, slots=True)
class Settings:
    """Where things live and how big a cycle is."""

    var_dir: Path
    samples_dir: Path
    curriculum_path: Path
    universe_path: Path
    warehouse_path: Path
    studies_url: str
    registry_url: str
    mlflow_tracking_uri: str
    mlflow_artifact_dir: Path
    mlflow_experiment: str
    export_dir: Path
    trial_profile: str
    cycle_cron: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Build settings from ``env`` (default ``os.environ``), validating what it reads."""
        env = os.environ if env is None else env
        var_dir = Path(env.get("FFE_VAR_DIR", str(PROJECT_DIR / "var"))).resolve()
        profile = env.get("FFE_TRIAL_PROFILE", "quick")
        if profile not in TRIAL_PROFILES:
            raise ValueError(f"FFE_TRIAL_PROFILE must be one of {TRIAL_PROFILES}, got {profile!r}")
        studies_url = env.get(
            "FFE_STUDIES_URL", f"journal:///{var_dir / 'optuna' / 'studies.journal'}"
        )
        if "://" not in studies_url:
            raise ValueError(
                f"FFE_STUDIES_URL must be journal:///path or a SQLAlchemy URL, got {studies_url!r}"
            )
        # The registry shares the Optuna database when that is SQL (PostgreSQL in production);
        # next to a journal file it gets its own SQLite file.
        registry_default = (
            f"sqlite:///{var_dir / 'optuna' / 'registry.db'}"
            if studies_url.startswith("journal:")
            else studies_url
        )
        registry_url = env.get("FFE_REGISTRY_URL", registry_default)
        if "://" not in registry_url or registry_url.startswith("journal:"):
            raise ValueError(f"FFE_REGISTRY_URL must be a SQLAlchemy URL, got {registry_url!r}")
        mlflow_dir = var_dir / "mlflow"
        return cls(
            var_dir=var_dir,
            samples_dir=Path(env.get("FFE_SAMPLES_DIR", str(PACKAGE_DIR / "data" / "samples"))),
            curriculum_path=Path(
                env.get("FFE_CURRICULUM", str(PACKAGE_DIR / "config" / "curriculum.yaml"))
            ),
            universe_path=Path(
                env.get("FFE_UNIVERSE", str(PACKAGE_DIR / "config" / "universe.yaml"))
            ),
            warehouse_path=Path(env.get("FFE_WAREHOUSE", str(var_dir / "warehouse.duckdb"))),
            studies_url=studies_url,
            registry_url=registry_url,
            mlflow_tracking_uri=env.get(
                "MLFLOW_TRACKING_URI", f"sqlite:///{mlflow_dir / 'mlflow.db'}"
            ),
            mlflow_artifact_dir=Path(
                env.get("FFE_MLFLOW_ARTIFACTS", str(mlflow_dir / "artifacts"))
            ),
            mlflow_experiment=env.get("FFE_MLFLOW_EXPERIMENT", "ffe_curriculum"),
            export_dir=Path(env.get("FFE_EXPORT_DIR", str(var_dir / "exports"))),
            trial_profile=profile,
            cycle_cron=env.get("FFE_CYCLE_CRON", "0 */6 * * *"),
        )
