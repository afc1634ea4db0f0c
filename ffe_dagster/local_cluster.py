"""``make run-cluster``: one level's study through Celery workers, on this machine.

It starts what a cluster has, privately: a PostgreSQL server (Dagster instance from
deploy/dagster.yaml, Optuna studies), a Redis broker, and Celery worker processes of
``dagster_celery.app`` configured by deploy/celery/dagster_celery_config.py, each with the
environment a worker machine exports (deploy/WORKERS.md). Then it runs ``study_workers_job`` of
``ffe_dagster.cluster`` with deploy/executors/celery.yaml as run config, and stops everything it
started. The tests in ``tests/celery`` use the same functions.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from dagster import DagsterInstance, JobExecutionResult, execute_job, reconstructable
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)
from sqlalchemy.engine import make_url

from ffe_dagster.cluster import DEFAULT_QUEUE, WAREHOUSE_QUEUE, cluster_study_workers_job
from ffe_dagster.config import load_universe
from ffe_dagster.config.environment import DATABASE_JOURNAL_PREFIX
from ffe_dagster.config.settings import PROJECT_DIR, Settings
from ffe_dagster.definitions import build_definitions
from ffe_dagster.jobs.study_workers import WORKER_ATTR
from ffe_dagster.local_broker import RedisServer, running_redis
from ffe_dagster.local_postgres import PostgresServer, running_postgres
from ffe_dagster.partitions import DATE_DIM, INSTRUMENT_DIM, bar_partitions
from ffe_dagster.resources.optuna_storage import open_storage
from ffe_dagster.terminal import console_run_config

RUN_CONFIG = PROJECT_DIR / "deploy" / "executors" / "celery.yaml"
WORKER_CONFIG_DIR = PROJECT_DIR / "deploy" / "celery"
READY_TIMEOUT_S = 300.0  # a loaded 2-core machine may take a minute to import Celery and Dagster
STOP_TIMEOUT_S = 30.0


def cluster_env(
    server: PostgresServer,
    broker: RedisServer,
    var_dir: Path,
    studies_db: str = "ffe",
    dagster_db: str = "dagster",
) -> dict[str, str]:
    """The variables every machine of the cluster exports (deploy/WORKERS.md), for these servers;
    the databases are created when missing."""
    server.create_database(studies_db, exist_ok=True)
    server.create_database(dagster_db, exist_ok=True)
    dagster = make_url(server.url(dagster_db))
    home = var_dir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_DIR / "deploy" / "dagster.yaml", home / "dagster.yaml")
    return {
        "FFE_VAR_DIR": str(var_dir),
        "FFE_STUDIES_URL": DATABASE_JOURNAL_PREFIX + server.url(studies_db),
        "FFE_SHARED_DIR": str(var_dir / "shared"),
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": str(dagster.host),
        "DAGSTER_PG_PORT": str(dagster.port),
        "DAGSTER_PG_USER": str(dagster.username),
        "DAGSTER_PG_PASSWORD": str(dagster.password),
        "DAGSTER_PG_DB": str(dagster.database),
        "DAGSTER_CELERY_BROKER_URL": broker.url(0),
        "DAGSTER_CELERY_BACKEND_URL": broker.url(1),
    }


@dataclass(slots=True)
class CeleryWorker:
    """One ``celery -A dagster_celery.app worker`` process group (main process + pool)."""

    name: str
    queues: tuple[str, ...]
    log: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def ready(self) -> bool:
        """True once the worker has logged that it consumes from the broker."""
        return self.log.is_file() and " ready." in self.log.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM (warm shutdown: a running step is finished first), then SIGKILL the group."""
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def worker_command(name: str, queues: Sequence[str], log: Path) -> list[str]:
    """The command a worker machine runs: one step at a time per process (``--concurrency 1``;
    start one worker per core, or raise the concurrency)."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "dagster_celery.app",
        "worker",
        "--loglevel",
        "INFO",
        "--concurrency",
        "1",
        "--prefetch-multiplier",
        "1",
        # Imported by the main process before it forks its pool, so a step's process starts
        # with the project loaded (tens of seconds on a busy machine otherwise, per process).
        "--include",
        "ffe_dagster.cluster",
        "-Q",
        ",".join(queues),
        "-n",
        f"{name}@%h",
        "--logfile",
        str(log),
    ]


def start_worker(
    name: str, queues: Sequence[str], env: Mapping[str, str], log_dir: Path
) -> CeleryWorker:
    """Start one Celery worker with ``env`` (plus deploy/celery on ``PYTHONPATH``)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    path = os.pathsep.join(p for p in (str(WORKER_CONFIG_DIR), env.get("PYTHONPATH", "")) if p)
    # The worker writes to its own copy of the file descriptor: ours is closed once it started.
    with (log_dir / f"{name}.stderr").open("wb") as stderr:
        process = subprocess.Popen(
            worker_command(name, queues, log),
            env={**env, "PYTHONPATH": path},
            cwd=PROJECT_DIR,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # its own process group: stopped (or killed) as a whole
        )
    return CeleryWorker(name, tuple(queues), log, process)


def wait_ready(workers: Sequence[CeleryWorker], timeout_s: float = READY_TIMEOUT_S) -> None:
    """Wait until every worker is ready; a worker that exits first fails with its log."""
    deadline = time.monotonic() + timeout_s
    while not all(w.ready() for w in workers):
        for w in workers:
            if w.process.poll() is not None:
                err = w.log.with_suffix(".stderr")
                raise RuntimeError(
                    f"Celery worker {w.name} exited ({w.process.returncode}):\n"
                    + (err.read_text(errors="replace")[-3000:] if err.is_file() else "")
                )
        if time.monotonic() > deadline:
            raise TimeoutError(f"Celery workers not ready after {timeout_s:.0f} s")
        time.sleep(0.2)


@contextmanager
def celery_workers(
    env: Mapping[str, str], count: int, log_dir: Path
) -> Iterator[list[CeleryWorker]]:
    """``count`` ready workers; the first also serves the warehouse queue (the plan op)."""
    workers: list[CeleryWorker] = []
    try:
        for i in range(1, count + 1):
            queues = (DEFAULT_QUEUE, WAREHOUSE_QUEUE) if i == 1 else (DEFAULT_QUEUE,)
            workers.append(start_worker(f"worker{i}-{uuid.uuid4().hex[:4]}", queues, env, log_dir))
        wait_ready(workers)
        yield workers
    finally:
        for w in workers:
            w.stop()


def run_config(
    level: int, workers: int, trials: int | None = None, verbose: bool = True
) -> dict[str, Any]:
    """deploy/executors/celery.yaml with the level, the worker count and the trial target
    (and the console logger at WARNING unless ``verbose``: every event stays in the instance)."""
    config = {**yaml.safe_load(RUN_CONFIG.read_text()), **console_run_config(verbose)}
    ops = {"level": level, "workers": workers}
    config["ops"]["plan_level_study"]["config"] = (
        ops if trials is None else {**ops, "trials": trials}
    )
    return config


def run_study_workers(
    instance: DagsterInstance,
    level: int,
    workers: int,
    trials: int | None = None,
    verbose: bool = True,
) -> JobExecutionResult:
    """Run the Celery ``study_workers_job`` in this process (the run coordinator): each step is
    a Celery task; this process only submits them and follows their results."""
    return execute_job(
        reconstructable(cluster_study_workers_job),
        instance=instance,
        run_config=run_config(level, workers, trials, verbose),
        raise_on_error=False,
    )


def fill_warehouse(instance: DagsterInstance, verbose: bool = True) -> None:
    """Ingest the universe's bars and detect regimes, as ``make run`` does: the plan op reads the
    level's data from the warehouse."""
    settings = Settings.from_env()
    defs = build_definitions(settings)
    partitions = bar_partitions(load_universe(settings.universe_path))
    days = partitions.get_partitions_def_for_dimension(DATE_DIM).get_partition_keys()
    keys = partitions.get_partitions_def_for_dimension(INSTRUMENT_DIM).get_partition_keys()
    ranges = {
        "ingest_job": (f"{days[0]}|{keys[0]}", f"{days[-1]}|{keys[-1]}"),
        "regimes_job": (keys[0], keys[-1]),
    }
    for job, (first, last) in ranges.items():
        tags = {
            "ffe/trigger": "manual",
            "ffe/no_chain": "1",  # this process drives the steps; the chain sensor must not
            ASSET_PARTITION_RANGE_START_TAG: first,
            ASSET_PARTITION_RANGE_END_TAG: last,
        }
        defs.resolve_job_def(job).execute_in_process(
            instance=instance, tags=tags, run_config=console_run_config(verbose)
        )
        print(f"  {job} done", flush=True)


def trials_by_celery_worker(
    studies_url: str, study_name: str, workers: Sequence[CeleryWorker]
) -> dict[str, int]:
    """COMPLETE and FAIL trials of the study per Celery worker, from each trial's ``worker``
    attribute (``host:pid`` of the pool process that asked it); a pool process belongs to the
    worker whose process group it is in. Call while the workers run (their pids must exist)."""
    groups = {w.process.pid: w.name for w in workers}
    counts: dict[str, int] = {}
    study = optuna.load_study(
        study_name=study_name,
        storage=open_storage(studies_url, stream=study_name, heartbeat_interval=None),
    )
    for trial in study.get_trials(deepcopy=False):
        pid = int(str(trial.user_attrs.get(WORKER_ATTR, "?:0")).rsplit(":", 1)[-1] or 0)
        try:
            name = groups.get(os.getpgid(pid), f"pid {pid}") if pid else "unknown"
        except ProcessLookupError:
            name = f"pid {pid} (exited)"
        counts[name] = counts.get(name, 0) + 1
    return counts


def _stop_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (e.g. from a CI timeout) unwinds like Ctrl-C, so every server and worker this
    process started is stopped by the context managers that started them."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point of ``make run-cluster``."""
    parser = argparse.ArgumentParser(prog="ffe_dagster.local_cluster")
    parser.add_argument("--var-dir", type=Path, default=PROJECT_DIR / "var" / "cluster")
    parser.add_argument("--level", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--trials", type=int, default=None, help="COMPLETE trials to reach")
    parser.add_argument("-v", "--verbose", action="store_true", help="Dagster's events too")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    var_dir: Path = args.var_dir.resolve()
    var_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with ExitStack() as stack:
        server = stack.enter_context(running_postgres(var_dir / "postgres"))
        broker = stack.enter_context(running_redis())
        env = {**os.environ, **cluster_env(server, broker, var_dir)}
        print(
            f"cluster: PostgreSQL on 127.0.0.1:{server.port}, Redis on 127.0.0.1:{broker.port}, "
            f"shared folder {env['FFE_SHARED_DIR']}",
            flush=True,
        )
        os.environ.update(env)  # this process is the run coordinator of the cluster's run
        instance = stack.enter_context(DagsterInstance.get())
        if not (var_dir / "warehouse.duckdb").is_file():
            print("cluster: filling the warehouse (ingest_job, regimes_job) ...", flush=True)
            fill_warehouse(instance, args.verbose)
        workers = stack.enter_context(celery_workers(env, args.workers, var_dir / "celery"))
        print(f"cluster: {len(workers)} Celery workers ready: {[w.name for w in workers]}")
        run_started = time.monotonic()
        result = run_study_workers(instance, args.level, args.workers, args.trials, args.verbose)
        seconds = time.monotonic() - run_started
        if result.success:
            with result:
                summary = result.output_for_node("summarize_study_workers")
            by_worker = trials_by_celery_worker(
                env["FFE_STUDIES_URL"], summary["study_name"], workers
            )
            print(
                f"cluster: run {result.run_id} succeeded in {seconds:.0f} s: study "
                f"{summary['study_name']} holds {summary['trials']} COMPLETE trials "
                f"({summary['new_trials']} new)",
                flush=True,
            )
            for step, row in summary["per_worker"].items():
                print(f"  step {step}: {row['added']} trials in {row['seconds']:.0f} s", flush=True)
            for name, count in sorted(by_worker.items()):
                print(f"  Celery worker {name}: {count} trials of the study", flush=True)
        else:
            print(f"cluster: run {result.run_id} FAILED after {seconds:.0f} s", flush=True)
    print(f"cluster: stopped everything it started; {time.monotonic() - started:.0f} s in all")
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
