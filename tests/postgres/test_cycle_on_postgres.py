"""The whole cycle in production mode (``make run-postgres``'s path): Dagster instance, Optuna
studies, parameter registry and MLflow tracking store all in PostgreSQL, configured only through
environment variables, with fake credentials set. Afterwards every place a secret could end up is
scanned for them: the cycle's output (logs), every row of the three databases (Dagster runs, event
log with its metadata, Optuna, registry, MLflow params / tags / metrics), and every file the cycle
wrote (MLflow artifacts, exports, warehouse, Dagster home).
"""

import json
import os
import secrets
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psycopg2
import pytest
import yaml
from mlflow.tracking import MlflowClient

from ffe_dagster.config.settings import PACKAGE_DIR, PROJECT_DIR
from ffe_dagster.local_postgres import PostgresServer
from ffe_dagster.local_production import DATABASES, prepare
from ffe_dagster.resources.warehouse import WarehouseResource

INSTRUMENT = "BTC_USDT"


def _small_cycle_config(folder: Path) -> dict[str, str]:
    """One instrument, 19 months of its real bars (mid-2021 rally to the 2022 bear market) and
    4-6 trials per level: every step of the cycle for real, in a few minutes."""
    universe = yaml.safe_load((PACKAGE_DIR / "config" / "universe.yaml").read_text())
    universe["instruments"] = [i for i in universe["instruments"] if i["key"] == INSTRUMENT]
    universe["history_start"], universe["history_end"] = "2021-06-01", "2022-12-31"
    curriculum = yaml.safe_load((PACKAGE_DIR / "config" / "curriculum.yaml").read_text())
    for level in curriculum["levels"]:
        level["trials"]["quick"] = 4 + level["level"] // 2
        level["windows"] = [w for w in level["windows"] if w["instrument"] == INSTRUMENT]
    (folder / "universe.yaml").write_text(yaml.safe_dump(universe))
    (folder / "curriculum.yaml").write_text(yaml.safe_dump(curriculum))
    return {
        # The quick counts set above (the default profile is the SPEC's 100-200 trials per level).
        "FFE_TRIAL_PROFILE": "quick",
        "FFE_UNIVERSE": str(folder / "universe.yaml"),
        "FFE_CURRICULUM": str(folder / "curriculum.yaml"),
        "FFE_SAMPLES_DIR": str(PACKAGE_DIR / "data" / "samples"),
    }


def _as_text(value: object) -> str:
    # Dagster keeps job and execution-plan snapshots zlib-compressed in bytea columns: scan their
    # JSON, not their compressed bytes.
    if isinstance(value, memoryview | bytes):
        raw = bytes(value)
        try:
            return zlib.decompress(raw).decode("utf-8", "replace")
        except zlib.error:
            return raw.decode("utf-8", "replace")
    return str(value)


def _rows_as_text(server: PostgresServer, database: str) -> Iterator[tuple[str, str]]:
    """(table, row as text) for every row of every table of ``database``."""
    con = psycopg2.connect(
        host=server.host,
        port=server.port,
        user=server.user,
        password=server.password,
        dbname=database,
    )
    try:
        with con.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            tables = [row[0] for row in cur.fetchall()]
            for table in tables:
                cur.execute(f'SELECT * FROM "{table}"')
                for row in cur.fetchall():
                    yield table, " | ".join(_as_text(v) for v in row)
    finally:
        con.close()


def _warehouse_rows(path: Path) -> Iterator[tuple[str, str]]:
    """(table, row as text) for every row of the DuckDB warehouse (its file may compress)."""
    with duckdb.connect(str(path), read_only=True) as con:
        for (table,) in con.sql("SELECT table_name FROM information_schema.tables").fetchall():
            for row in con.sql(f'SELECT * FROM "{table}"').fetchall():
                yield table, " | ".join(str(v) for v in row)


def _files(*folders: Path) -> Iterator[Path]:
    for folder in folders:
        yield from (p for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow
def test_full_cycle_on_postgres_leaks_no_secret(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    var_dir = tmp_path / "var"
    fake = {
        # Set for the whole cycle as a deployment would; none may appear anywhere it wrote.
        "OANDA_API_TOKEN": f"fake-oanda-{secrets.token_hex(12)}",
        "FFE_WEBHOOK_URL": f"https://hooks.example.invalid/services/{secrets.token_hex(12)}",
    }
    needles = {
        "PostgreSQL password": postgres_server.password,
        "OANDA token": fake["OANDA_API_TOKEN"],
        "webhook token": fake["FFE_WEBHOOK_URL"].rsplit("/", 1)[1],
    }
    env = {
        **os.environ,
        **prepare(postgres_server, var_dir),
        **_small_cycle_config(tmp_path),
        **fake,
    }
    assert postgres_server.password in env["FFE_STUDIES_URL"]  # the secret is really in use
    cycle = subprocess.run(
        [sys.executable, "-m", "ffe_dagster.cli", "run-cycle"],
        env=env,
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert cycle.returncode == 0, cycle.stderr[-4000:]
    assert "cycle finished" in cycle.stdout

    dumps = {name: list(_rows_as_text(postgres_server, db)) for name, db in DATABASES.items()}
    dumps["warehouse"] = list(_warehouse_rows(var_dir / "warehouse.duckdb"))
    # Everything landed in PostgreSQL, not in local files.
    dagster_tables = {table for table, _ in dumps["dagster"]}
    assert {"runs", "event_logs"} <= dagster_tables
    runs = [text for table, text in dumps["dagster"] if table == "runs"]
    assert len(runs) == 3 and all("SUCCESS" in r for r in runs)  # ingest, regimes, optimization
    events = [text for table, text in dumps["dagster"] if table == "event_logs"]
    assert any("ASSET_MATERIALIZATION" in e and "study_name" in e for e in events)
    study_tables = {table for table, _ in dumps["studies"]}
    # Optuna's journal in PostgreSQL: a stream of log rows per level study, not Optuna's tables.
    assert {"ffe_optuna_journal", "ffe_optuna_journal_heartbeats"} <= study_tables
    assert not study_tables & {"studies", "trials"}
    journal = [text for table, text in dumps["studies"] if table == "ffe_optuna_journal"]
    # The registry wrote its decisions beside them: versions for candidates that reached COLD,
    # ``regime_decisions`` for regimes a level that did not pass blocked (tables without rows
    # do not show in the dump).
    assert study_tables & {"parameter_versions", "regime_decisions"}
    # A level study and its walk-forward studies are created in the level's stream.
    assert sum('"op_code":0,' in row for row in journal) >= 4
    assert not (var_dir / "optuna").exists()  # no journal or SQLite fallback
    # The job snapshots hold the resources' configuration: the URLs appear as the variables
    # that carry them (Dagster EnvVar), not as their values.
    snapshots = " ".join(text for table, text in dumps["dagster"] if table == "snapshots")
    assert "FFE_STUDIES_URL" in snapshots and "MLFLOW_TRACKING_URI" in snapshots

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("ffe_curriculum")
    assert experiment is not None
    all_runs = client.search_runs([experiment.experiment_id])
    level_runs = [r for r in all_runs if r.data.tags.get("ffe.kind") == "level_study"]
    # One run per level study; a level the progression rule skipped ran no study.
    warehouse = WarehouseResource(path=str(var_dir / "warehouse.duckdb"))
    studied = [
        str(n)
        for n in (1, 2, 3, 4)
        if (r := warehouse.latest_level_result(n)) is not None and not r.skipped
    ]
    assert "1" in studied
    assert sorted(r.data.tags["level"] for r in level_runs) == studied
    streams = {row.split(" | ", 1)[0] for row in journal}
    assert streams == {r.data.tags["study_name"] for r in level_runs}
    assert all(r.info.status == "FINISHED" for r in level_runs)
    (cycle_run,) = [r for r in all_runs if r.data.tags.get("ffe.kind") == "cycle"]
    assert {r.data.tags["mlflow.parentRunId"] for r in level_runs} == {cycle_run.info.run_id}
    for run in all_runs:
        params_and_tags = json.dumps({**run.data.params, **run.data.tags})
        for what, secret in needles.items():
            assert secret not in params_and_tags, f"{what} in MLflow run {run.info.run_id}"
    artifacts = list(_files(Path(env["FFE_MLFLOW_ARTIFACTS"])))
    assert any(p.name == "trials.csv" for p in artifacts)
    export = var_dir / "exports" / "promoted_parameters.json"
    assert export.is_file()

    leaks = [
        f"{what} in the cycle's output"
        for what, secret in needles.items()
        if secret in cycle.stdout or secret in cycle.stderr
    ]
    for name, rows in dumps.items():
        for table, text in rows:
            leaks += [f"{what} in {name}.{table}" for what, s in needles.items() if s in text]
    scanned = list(_files(var_dir))
    assert export in scanned and len(scanned) > len(artifacts)
    for path in scanned:
        data = path.read_bytes()
        leaks += [f"{what} in {path}" for what, s in needles.items() if s.encode() in data]
    assert leaks == []
