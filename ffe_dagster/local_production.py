"""``make run-postgres``: one full cycle in production mode, on one machine.

Production mode keeps every piece of shared state in PostgreSQL: the Dagster instance
(deploy/dagster.yaml: runs, event log, schedules), the Optuna studies and the parameter registry
(one database), and the MLflow tracking store (another), with MLflow artifacts in a folder. Here
the server is a private one under ``var/production/postgres`` (started for the cycle, stopped
after it, kept for the next run); in production the same variables point at a managed server.

The cycle runs in a child process with exactly the environment a production deployment sets, so
what is exercised is the real configuration path (environment -> Settings / EnvVar ->
resources), not a shortcut.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from sqlalchemy.engine import make_url

from ffe_dagster.config.environment import DATABASE_JOURNAL_PREFIX
from ffe_dagster.config.settings import PROJECT_DIR
from ffe_dagster.local_postgres import PostgresServer, running_postgres

DATABASES = {"studies": "ffe", "dagster": "dagster", "mlflow": "mlflow"}


def production_env(server: PostgresServer, var_dir: Path) -> dict[str, str]:
    """The variables of deploy/README.md for ``server``: what a production host exports."""
    dagster = make_url(server.url(DATABASES["dagster"]))
    return {
        "FFE_VAR_DIR": str(var_dir),
        "FFE_STUDIES_URL": DATABASE_JOURNAL_PREFIX + server.url(DATABASES["studies"]),
        "MLFLOW_TRACKING_URI": server.url(DATABASES["mlflow"]),
        "FFE_MLFLOW_ARTIFACTS": str(var_dir / "mlflow" / "artifacts"),
        "DAGSTER_HOME": str(var_dir / "dagster_home"),
        "DAGSTER_PG_HOST": str(dagster.host),
        "DAGSTER_PG_PORT": str(dagster.port),
        "DAGSTER_PG_USER": str(dagster.username),
        "DAGSTER_PG_PASSWORD": str(dagster.password),
        "DAGSTER_PG_DB": str(dagster.database),
        # dagster-postgres writes a step's partition materializations in one INSERT when
        # batching is on (SQLite has no batch write; there it changes nothing).
        "DAGSTER_EVENT_BATCH_SIZE": "1000",
    }


def prepare(server: PostgresServer, var_dir: Path) -> dict[str, str]:
    """Create the databases (once) and the Dagster home holding deploy/dagster.yaml."""
    for name in DATABASES.values():
        server.create_database(name, exist_ok=True)
    env = production_env(server, var_dir)
    home = Path(env["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_DIR / "deploy" / "dagster.yaml", home / "dagster.yaml")
    return env


def run_in_production_mode(
    var_dir: Path,
    command: Sequence[str],
    extra_env: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
) -> int:
    """Start the private server, run ``command`` with the production environment, stop it.

    With ``timeout_s`` a command still running then is killed and ``TimeoutExpired`` raised
    (the server is stopped all the same)."""
    var_dir.mkdir(parents=True, exist_ok=True)
    print(f"production mode: PostgreSQL cluster in {var_dir / 'postgres'}", flush=True)
    with running_postgres(var_dir / "postgres") as server:
        print(
            f"  PostgreSQL on {server.host}:{server.port}, databases "
            f"{', '.join(DATABASES.values())}; Dagster instance from deploy/dagster.yaml",
            flush=True,
        )
        env = {**os.environ, **prepare(server, var_dir), **(extra_env or {})}
        started = time.monotonic()
        code = subprocess.run(
            list(command), env=env, cwd=PROJECT_DIR, check=False, timeout=timeout_s
        ).returncode
        print(f"production mode: finished in {time.monotonic() - started:.0f}s", flush=True)
        return code


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point of ``make run-postgres``."""
    parser = argparse.ArgumentParser(prog="ffe_dagster.local_production")
    parser.add_argument(
        "--var-dir",
        type=Path,
        default=PROJECT_DIR / "var" / "production",
        help="folder for the PostgreSQL cluster, the warehouse, MLflow artifacts and exports",
    )
    args = parser.parse_args(argv)
    return run_in_production_mode(
        args.var_dir.resolve(), [sys.executable, "-m", "ffe_dagster.cli", "run-cycle"]
    )


if __name__ == "__main__":
    sys.exit(main())
