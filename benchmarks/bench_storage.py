"""``make bench-postgres``: Optuna storages under load, through the project's own study runner.

Two measurements, each on 500 trials of the multi-objective TPE sampler the project uses
(``run_study`` with ``sampler="tpe"``, batches of 16, the curriculum's parameter space and
constraints):

1. several workers, one study on PostgreSQL, in Optuna's RDB storage and in the journal on
   PostgreSQL (production's storage): 1, 2, 4 and 8 worker processes share one study (the
   parent creates it first, each worker runs ``run_study`` with ``fail_stale_running=False``, as
   ``tests/postgres/test_optuna_on_postgres.py`` does) -> wall seconds and trials per second; the
   study must then hold exactly 500 COMPLETE trials with unique numbers and nothing RUNNING;
2. per-trial storage overhead, one worker: the same 500 trials on Optuna's in-memory storage, the
   journal file, SQLite, PostgreSQL (RDB) and the journal in PostgreSQL; overhead = (time -
   in-memory time) / trials. The same runs with Optuna's RandomSampler (no history read, next
   to no sampler work) split the sampler's cost from the storage's.

The objective is a cheap deterministic function of the parameters (no backtest), so the time is
the sampler's and the storage's. PostgreSQL is a throw-away private server on 127.0.0.1
(``ffe_dagster.local_postgres``); journal and SQLite files live in a temporary folder on the same
disk as ``var/``. Results go to ``benchmarks/results/storage.json`` and ``storage.md``.

    python -m benchmarks.bench_storage          # everything (about 8 minutes on 2 cores)
    python -m benchmarks.bench_storage single ARGS_JSON   # one in-process run, printed as JSON
    python -m benchmarks.bench_storage worker ARGS_JSON   # one worker of a shared study
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import psycopg2
from optuna.trial import TrialState

import ffe_dagster.core.study.optimize as optimize
from benchmarks.common import curriculum, machine
from benchmarks.storage_report import BATCH, OBJECTIVE, REFERENCE_S, TRIALS, markdown, reading
from ffe_dagster.config.environment import DATABASE_JOURNAL_PREFIX
from ffe_dagster.config.settings import PROJECT_DIR
from ffe_dagster.core.backtest.metrics import Metrics
from ffe_dagster.core.study.evaluation import Params
from ffe_dagster.core.study.level_specs import ParamRange
from ffe_dagster.core.study.optimize import DIRECTIONS, StudyConfig, run_study
from ffe_dagster.local_postgres import PostgresServer, running_postgres
from ffe_dagster.resources.optuna_storage import open_storage

RESULTS = Path(__file__).resolve().parent / "results"
WORKERS = (1, 2, 4, 8)
STORAGES = ("memory", "journal", "sqlite", "postgresql", "postgresql_journal")
# The shared-study runs: Optuna's RDB storage and the journal in PostgreSQL (production's).
SHARED_STORAGES = ("postgresql", "postgresql_journal")
SEED = 42


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the objective, the study, one run (all run inside the measuring process) -----------------


def _unit(params: Params, space: Sequence[ParamRange]) -> list[float]:
    out: list[float] = []
    for p in space:
        value = params[p.name]
        if p.choices:
            out.append(list(p.choices).index(str(value)) / max(1, len(p.choices) - 1))
        else:
            out.append((float(value) - p.low) / (p.high - p.low))
    return out


def _evaluate(batch: Sequence[Params], space: Sequence[ParamRange]) -> list[Metrics]:
    out: list[Metrics] = []
    for params in batch:
        u = _unit(params, space)
        target = [(i + 1) / (len(u) + 1) for i in range(len(u))]
        distance = sum((a - b) ** 2 for a, b in zip(u, target, strict=True)) / len(u)
        odd, even = u[1::2] or u, u[0::2]
        out.append(
            Metrics(
                sharpe=2.0 - 8.0 * distance,
                sortino=0.0,
                max_drawdown_pct=4.0 + 16.0 * sum(odd) / len(odd),
                win_rate_pct=30.0 + 30.0 * sum(even) / len(even),
                profit_factor=1.0,
                total_return_pct=0.0,
                n_trades=int(10 + 90 * u[-1]),
                avg_trade_bars=1.0,
                exposure_pct=0.0,
            )
        )
    return out


def _config(args: dict[str, Any], storage: Any, n_trials: int, seed: int) -> StudyConfig:
    return StudyConfig(
        study_name=args["study"],
        storage=storage,
        n_trials=n_trials,
        seed=seed,
        constraints=curriculum().constraints,
        batch_size=args["batch"],
        sampler=args["sampler"],
        fail_stale_running=args.get("fail_stale_running", True),
    )


def _use_sampler(name: str) -> list[int]:
    """Make ``run_study`` accept ``name``; "random" (Optuna's RandomSampler) is this benchmark's
    own addition. Returns the list of seeds the factory was called with, to prove it was used."""
    calls: list[int] = []
    original = optimize.make_sampler

    def make_sampler(sampler: str, seed: int) -> optuna.samplers.BaseSampler:
        calls.append(seed)
        if sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return original(sampler, seed)

    optimize.make_sampler = make_sampler
    return calls


def single(args: dict[str, Any]) -> dict[str, Any]:
    """One worker in this process: ``n_trials`` on a fresh study in the given storage."""
    space = curriculum().parameters
    calls = _use_sampler(args["sampler"])
    if args["url"] == "memory":
        storage: Any = optuna.storages.InMemoryStorage()
    else:
        storage = open_storage(args["url"], stream=args["study"])
    # The study (and an RDB's schema) exists before the clock starts, as in the shared runs.
    optuna.create_study(study_name=args["study"], storage=storage, directions=list(DIRECTIONS))
    start, cpu = time.perf_counter(), time.process_time()
    outcome = run_study(
        lambda batch: _evaluate(batch, space),
        space,
        _config(args, storage, args["n_trials"], SEED),
    )
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    if not calls:
        raise RuntimeError("run_study did not build its sampler through make_sampler")
    if outcome.new_trials != args["n_trials"] or len(outcome.trials) != args["n_trials"]:
        raise RuntimeError(f"expected {args['n_trials']} new trials, got {outcome}")
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "study_seconds": outcome.seconds,
        "trials": outcome.new_trials,
        "feasible": sum(t.feasible for t in outcome.trials),
    }


def worker(args: dict[str, Any]) -> dict[str, Any]:
    """One of several workers on a shared study (created by the parent).

    Two barriers: the clock starts when every worker has imported and opened its storage; and
    the first batch waits until every worker is in it, so each has read the study's COMPLETE
    count (0) before anyone tells a trial, and adds exactly its own ``n_trials``.
    """
    space = curriculum().parameters
    index, n_workers, barrier = args["worker"], args["workers"], Path(args["barrier"])
    storage = open_storage(args["url"], stream=args["study"])
    _wait(barrier, "imported", index, n_workers)
    started, cpu = time.time(), time.process_time()
    first = [True]

    def evaluate(batch: Sequence[Params]) -> list[Metrics]:
        if first[0]:
            first[0] = False
            _wait(barrier, "first-batch", index, n_workers)
        return _evaluate(batch, space)

    outcome = run_study(evaluate, space, _config(args, storage, args["n_trials"], SEED + index))
    return {
        "worker": index,
        "started": started,
        "ended": time.time(),
        "cpu_seconds": time.process_time() - cpu,
        "resumed": outcome.resumed_trials,
        "new": outcome.new_trials,
    }


def _wait(barrier: Path, stage: str, index: int, n_workers: int) -> None:
    (barrier / f"{stage}-{index}").touch()
    deadline = time.monotonic() + 120
    while len(list(barrier.glob(f"{stage}-*"))) < n_workers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"not every worker reached {stage!r}")
        time.sleep(0.005)


# --- the parent: server, processes, checks, results -------------------------------------------


def _python(mode: str, args: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench_storage", mode, json.dumps(args)],
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _report(proc: subprocess.Popen[str], what: str) -> dict[str, Any]:
    out, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}):\n{err[-4000:]}")
    return json.loads(out.strip().splitlines()[-1])


def shared_study(
    server: PostgresServer, kind: str, n_workers: int, workdir: Path
) -> dict[str, Any]:
    """``n_workers`` processes on one PostgreSQL study of ``TRIALS`` trials in storage ``kind``
    (``postgresql``: Optuna's RDB storage, ``postgresql_journal``: the journal in PostgreSQL);
    checked at the end."""
    # Near-equal shares (500 over 8 workers: 63 x 4 and 62 x 4).
    shares = [TRIALS // n_workers + (w < TRIALS % n_workers) for w in range(n_workers)]
    url = server.create_database(f"shared_{kind}_{n_workers}")
    if kind == "postgresql_journal":
        url = DATABASE_JOURNAL_PREFIX + url
    study = f"shared_{n_workers}_workers"
    optuna.create_study(
        study_name=study, storage=open_storage(url, stream=study), directions=list(DIRECTIONS)
    )
    barrier = workdir / f"barrier_{kind}_{n_workers}"
    barrier.mkdir()
    spawned = time.time()
    procs = [
        _python(
            "worker",
            {
                "worker": w,
                "workers": n_workers,
                "barrier": str(barrier),
                "study": study,
                "url": url,
                "n_trials": shares[w],
                "batch": BATCH,
                "sampler": "tpe",
                "fail_stale_running": False,
            },
        )
        for w in range(n_workers)
    ]
    reports = [_report(p, f"worker {w} of {n_workers}") for w, p in enumerate(procs)]
    trials = optuna.load_study(
        study_name=study, storage=open_storage(url, stream=study)
    ).get_trials(deepcopy=False)
    _check_shared(trials, reports, shares)
    wall = max(r["ended"] for r in reports) - min(r["started"] for r in reports)
    return {
        "storage": kind,
        "workers": n_workers,
        "trials": len(trials),
        "wall_seconds": wall,
        "trials_per_second": len(trials) / wall,
        "wall_seconds_with_process_start": max(r["ended"] for r in reports) - spawned,
        "workers_cpu_seconds": sum(r["cpu_seconds"] for r in reports),
        "per_worker": reports,
        "check": f"{len(trials)} COMPLETE, numbers 0..{len(trials) - 1} unique, none RUNNING",
    }


def _check_shared(
    trials: Sequence[optuna.trial.FrozenTrial],
    reports: Sequence[dict[str, Any]],
    shares: Sequence[int],
) -> None:
    n_workers = len(shares)
    states = {s.name: n for s, n in Counter(t.state for t in trials).items()}
    numbers = sorted(t.number for t in trials)
    problems = []
    if len(trials) != TRIALS or states != {"COMPLETE": TRIALS}:
        problems.append(f"expected exactly {TRIALS} COMPLETE trials, got {states}")
    if numbers != list(range(len(trials))):
        problems.append("trial numbers are not unique and consecutive")
    if any(t.state == TrialState.RUNNING for t in trials):
        problems.append("trials left RUNNING")
    if sorted(r["new"] for r in reports) != sorted(shares):
        problems.append(f"workers did not each add their share {shares}: {reports}")
    if problems:
        raise SystemExit(f"BENCHMARK FAILED ({n_workers} workers): " + "; ".join(problems))


def one_worker(server: PostgresServer, kind: str, sampler: str, workdir: Path) -> dict[str, Any]:
    """``TRIALS`` trials, one process, on a fresh study in storage ``kind``."""
    name = f"single_{kind}_{sampler}"
    urls = {
        "memory": "memory",
        "journal": f"journal:///{workdir / name}.journal",
        "sqlite": f"sqlite:///{workdir / name}.db",
        "postgresql": server.create_database(name) if kind == "postgresql" else "",
        "postgresql_journal": (
            DATABASE_JOURNAL_PREFIX + server.create_database(name)
            if kind == "postgresql_journal"
            else ""
        ),
    }
    args = {"study": name, "url": urls[kind], "n_trials": TRIALS, "batch": BATCH}
    report = _report(_python("single", {**args, "sampler": sampler}), f"{kind} {sampler}")
    return {"storage": kind, "sampler": sampler, **report}


def _postgres_version(server: PostgresServer) -> str:
    con = psycopg2.connect(
        host=server.host, port=server.port, user=server.user, password=server.password,
        dbname="postgres",
    )  # fmt: skip
    try:
        with con.cursor() as cur:
            cur.execute("SHOW server_version")
            row = cur.fetchone()
    finally:
        con.close()
    return str(row[0]) if row else "unknown"


def _overheads(single_runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    base = {r["sampler"]: r["seconds"] for r in single_runs if r["storage"] == "memory"}
    return [
        {
            **r,
            "ms_per_trial": 1000.0 * r["seconds"] / r["trials"],
            "overhead_ms_per_trial": 1000.0 * (r["seconds"] - base[r["sampler"]]) / r["trials"],
        }
        for r in single_runs
    ]


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so the private PostgreSQL server is stopped."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> None:
    """Run everything, or one internal part (``single ARGS``, ``worker ARGS``)."""
    global TRIALS
    signal.signal(signal.SIGTERM, _interrupt)
    if argv and argv[0] in ("single", "worker"):
        part = single if argv[0] == "single" else worker
        print(json.dumps(part(json.loads(argv[1]))))
        return
    if argv[:1] == ["--trials"]:
        # Fewer trials for a quick look (or a busy machine); the default is the 500.
        TRIALS = int(argv[1])
    begin = time.perf_counter()
    load_before = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="ffe-bench-storage-"))
    try:
        with running_postgres() as server:
            _log(f"PostgreSQL started on 127.0.0.1:{server.port} (throw-away cluster)")
            shared = []
            for kind, n in ((k, n) for k in SHARED_STORAGES for n in WORKERS):
                _log(f"{TRIALS} TPE trials, {n} worker(s), one study, {kind} ...")
                shared.append(shared_study(server, kind, n, workdir))
                _log(
                    f"  {shared[-1]['wall_seconds']:.1f} s, "
                    f"{shared[-1]['trials_per_second']:.1f} trials/s; {shared[-1]['check']}"
                )
            single_runs = []
            for sampler in ("tpe", "random"):
                for kind in STORAGES:
                    _log(f"{TRIALS} {sampler} trials, 1 worker, {kind} ...")
                    single_runs.append(one_worker(server, kind, sampler, workdir))
                    _log(f"  {single_runs[-1]['seconds']:.2f} s")
            pg_version = _postgres_version(server)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result: dict[str, Any] = {
        "machine": machine(),
        "cores": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
        "niceness": os.nice(0),  # the benchmark's, inherited by its workers and PostgreSQL
        "optuna": optuna.__version__,
        "postgresql": pg_version,
        "trials": TRIALS,
        "batch_size": BATCH,
        "parameters": len(curriculum().parameters),
        "objective": OBJECTIVE,
        "reference_issue_seconds": REFERENCE_S,
        "shared_study": shared,
        "one_worker": _overheads(single_runs),
    }
    result["reading"] = reading(result)
    result["benchmark_seconds"] = time.perf_counter() - begin
    # A quick look with fewer trials does not overwrite the 500-trial results.
    stem = "storage" if TRIALS == 500 else f"storage_{TRIALS}_trials"
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2))
    (RESULTS / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main(sys.argv[1:])
