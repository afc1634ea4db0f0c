"""``make bench-cycle``: how long the main job takes, and where the time goes.

Each measurement is ``python -m ffe_dagster.cli run-cycle`` (what ``make run`` runs) in its own
process and its own temporary ``var/`` and ``DAGSTER_HOME``, timed from outside (wall, Python
start and imports included; the install is not):

0. ``startup``: the fixed costs every command pays: importing the package, building the
   Definitions, ``dagster definitions validate``.
1. ``fresh``: a fresh clone's first ``make run`` (empty stores). ``make setup`` compiles the
   backtest's numba kernels into an empty numba cache first (``ffe_dagster/kernel_warmup.py``,
   part of the install like Python's bytecode); that step is timed on its own (``kernels``,
   always run first) and every cycle after it finds the kernels compiled.
2. ``again``: ``make run`` once more, no new bars (no bar partition is due, so no ingest run).
3. ``incremental``: the 6-hour cycle: the bundled history first loaded without its last 6 hours
   of bars, then the files complete again and ``run-cycle --incremental`` ingests the newest
   partition of every instrument (what the schedule requests), then regimes, curriculum and
   promotion.
4. ``postgres``: ``make run-postgres``'s cycle (Dagster, Optuna, registry, MLflow on a private
   PostgreSQL server), against ``fresh_warm``: the same fresh cycle on SQLite with the numba
   cache already warm, as the PostgreSQL run has it.
5. Dagster's bookkeeping of the first backfill (``ingest_job``): its wall minus the time inside
   the asset bodies (their ``compute_s`` metadata), on SQLite and on PostgreSQL.
6. The optimization job against the engine path (``run_level`` alone) on the same bars and
   trials, level repeats included; ``make bench``'s engine path (one try per level) beside it.
7. With ``--grains``: one instrument-year of bars ingested as day, week and month partitions.

Every cycle is stopped after ``--timeout`` seconds (default 900) and recorded as timed out, so
one run ends in bounded time: at most 6 cycles, the start-up probes and the engine path.
Results: ``benchmarks/results/cycle.json`` and ``cycle.md``. ``make test``'s time is not
measured here (run it from a fresh clone).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from benchmarks.common import machine
from benchmarks.cycle_report import RESULTS, TARGETS, markdown, write_results
from ffe_dagster.config.settings import PACKAGE_DIR, PROJECT_DIR
from ffe_dagster.core.study.level_result import LevelResult

SAMPLES = PACKAGE_DIR / "data" / "samples"
UNIVERSE = PACKAGE_DIR / "config" / "universe.yaml"


def _load() -> str:
    return (
        Path("/proc/loadavg").read_text().split(" ")[0] if Path("/proc/loadavg").exists() else "?"
    )


def _cycle(
    folder: Path,
    env: Mapping[str, str],
    *extra: str,
    postgres: bool = False,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """One ``run-cycle`` in a child process; its report plus the wall seen from outside (or,
    past ``timeout_s``, the time it was given)."""
    report = folder / f"report-{time.monotonic_ns()}.json"
    command = [sys.executable, "-m", "ffe_dagster.cli", "run-cycle", "--report", str(report)]
    load = _load()
    started = time.monotonic()
    try:
        if postgres:
            from ffe_dagster.local_production import run_in_production_mode

            code = run_in_production_mode(
                folder / "production", [*command, *extra], env, timeout_s=timeout_s
            )
        else:
            code = subprocess.run(
                [*command, *extra],
                env={**os.environ, **env},
                cwd=PROJECT_DIR,
                check=False,
                timeout=timeout_s,
            ).returncode
    except subprocess.TimeoutExpired:
        return {"timed_out_after_s": timeout_s, "load_before": load, "load_after": _load()}
    wall = time.monotonic() - started
    if code != 0:
        raise RuntimeError(f"run-cycle {' '.join(extra)} failed with exit code {code}")
    return _run_record(json.loads(report.read_text()), wall, load, _load())


def _run_record(out: Mapping[str, Any], wall: float, load: str, load_after: str) -> dict[str, Any]:
    results = [LevelResult.from_row(r) for r in out["level_results"]]
    return {
        "wall_s": round(wall, 1),
        "cycle_s": round(out["cycle_s"], 1),
        # interpreter start, imports, build_definitions, planning and the summary
        "outside_runs_s": round(wall - sum(out["seconds"].values()), 1),
        "load_before": load,
        "load_after": load_after,
        "steps_s": {k: round(v, 1) for k, v in out["seconds"].items()},
        "compute_s": {
            k: v if v is None else round(v, 1) for k, v in out["compute_seconds"].items()
        },
        "trials": {r.level: r.n_trials for r in results},
        # A skipped level ran no study: no new-trial count (null), as its stored row has none.
        "new_trials": {r.level: None if r.skipped else r.new_trials for r in results},
    }


def startup(env: Mapping[str, str]) -> dict[str, Any]:
    """Seconds (wall, median of 3, each in a new interpreter) to import the package, to build
    its Definitions, and for ``dagster definitions validate``."""
    commands = {
        "python_start_s": [sys.executable, "-c", "pass"],
        "import_definitions_s": [sys.executable, "-c", "import ffe_dagster.definitions"],
        "build_definitions_s": [
            sys.executable,
            "-c",
            "from ffe_dagster.definitions import build_definitions; build_definitions()",
        ],
        "definitions_validate_s": [
            str(Path(sys.executable).parent / "dagster"),
            "definitions",
            "validate",
            "-w",
            "workspace.yaml",
        ],
    }
    out: dict[str, Any] = {"load_before": _load()}
    for name, command in commands.items():
        times = []
        for _ in range(3):
            started = time.monotonic()
            subprocess.run(
                command,
                env={**os.environ, **env},
                cwd=PROJECT_DIR,
                check=True,
                capture_output=True,
            )
            times.append(time.monotonic() - started)
        out[name] = round(sorted(times)[1], 2)
    out["load_after"] = _load()
    return out


def collect(root: Path) -> dict[str, Any]:
    """Results from the reports a stopped ``--keep`` run left in ``root``. Each cycle's wall is
    then the CLI's own ``cycle_s`` (interpreter start and imports not included) and the load
    is the one at collection time: say so wherever these numbers are quoted."""
    load = _load()

    def runs(folder: str) -> list[dict[str, Any]]:
        paths = sorted((root / folder).rglob("report-*.json"), key=lambda p: p.stat().st_mtime)
        out = []
        for path in paths:
            rep = json.loads(path.read_text())
            record = _run_record(rep, rep["cycle_s"], load, load)
            record["wall_note"] = "cycle_s inside the CLI (collected from a stopped run)"
            out.append(record)
        return out

    r: dict[str, Any] = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "targets": TARGETS,
        "collected_from_stopped_run": True,
    }
    fresh = runs("fresh")
    if fresh:
        r["fresh"] = fresh[0]
        r["bookkeeping"] = {"sqlite": _bookkeeping(fresh[0])}
    if len(fresh) > 1:
        r["again"] = fresh[1]
    inc = runs("incremental")
    if len(inc) > 1:
        r["incremental"] = {"backfill_without_last_6h": inc[0], "cycle": inc[1]}
    return r


def _env(folder: Path, numba: Path) -> dict[str, str]:
    home = folder / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_DIR / "dagster.yaml", home / "dagster.yaml")
    env = {
        "FFE_VAR_DIR": str(folder / "var"),
        "DAGSTER_HOME": str(home),
        "NUMBA_CACHE_DIR": str(numba),
        "FFE_TRIAL_PROFILE": "full",
        "PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::UserWarning",
    }
    return env


def _bookkeeping(run: Mapping[str, Any]) -> dict[str, Any]:
    if "steps_s" not in run or "ingest_job" not in run["steps_s"]:
        return {"not measured": "the cycle timed out or ran no ingest"}
    wall = run["steps_s"]["ingest_job"]
    body = run["compute_s"]["ingest_job"] or 0.0
    return {"ingest_wall_s": wall, "asset_bodies_s": body, "share": round(1 - body / wall, 3)}


def _truncated_samples(folder: Path, hours: int) -> Path:
    """A copy of the bundled samples without their last ``hours`` hours."""
    samples = folder / "samples"
    shutil.copytree(SAMPLES, samples)
    for inst in yaml.safe_load(UNIVERSE.read_text())["instruments"]:
        path = samples / inst["file"]
        bars = pl.read_parquet(path)
        last = bars["ts"].max()
        assert last is not None
        bars.filter(pl.col("ts") <= last - pl.duration(hours=hours)).write_parquet(path)
    return samples


def incremental(folder: Path, numba: Path, timeout_s: float) -> dict[str, Any]:
    """The history without its last 6 hours, then the 6-hour cycle once they arrive."""
    samples = _truncated_samples(folder, 6)
    env = {**_env(folder, numba), "FFE_SAMPLES_DIR": str(samples)}
    first = _cycle(folder, env, timeout_s=timeout_s)
    for name in os.listdir(SAMPLES):
        if name.endswith(".parquet"):
            shutil.copy(SAMPLES / name, samples / name)  # the 6 hours arrive
    cycle = _cycle(folder, env, "--incremental", timeout_s=timeout_s)
    return {"backfill_without_last_6h": first, "cycle": cycle}


def engine_path() -> dict[str, Any]:
    """``make bench``'s engine path: the full curriculum on the bundled 1-hour bars."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_engine", "engine", "1h_2020_2024"],
        check=True,
        capture_output=True,
        text=True,
        cwd=PROJECT_DIR,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"seconds": round(result["seconds"], 1), "trials": result["trials"]}


def engine_same_work(folder: Path, numba: Path) -> dict[str, Any]:
    """``run_level`` alone (``bench_optimization``'s engine path) on the warehouse a finished
    cycle in ``folder`` left: the same bars, study configuration, level repeats, warm starts
    and skip rule as that cycle's ``optimization_job``, on a new journal file of the job's own
    (batched) storage. Timed inside the child process, imports excluded."""
    env = {**os.environ, **_env(folder, numba)}
    for key in ("FFE_STUDIES_URL", "FFE_WAREHOUSE", "FFE_REGISTRY_URL", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    studies = f"journal:///{folder / 'engine_same_work.journal'}"
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_optimization", "engine", studies],
        check=True,
        capture_output=True,
        text=True,
        cwd=PROJECT_DIR,
        env=env,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "seconds": round(result["seconds"], 1),
        "trials": sum(lv["trials"] for lv in result["levels"]),
        "cpu_s": round(result["cpu_s"], 1),
    }


def grains(folder: Path) -> dict[str, Any]:
    """Ingest one instrument-year (BTC_USDT 2023, hourly) as day, week and month partitions."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_grain", str(folder)],
        check=True,
        capture_output=True,
        text=True,
        cwd=PROJECT_DIR,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    """Run every measurement once, writing the results files after each."""
    parser = argparse.ArgumentParser(prog="benchmarks.bench_cycle")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders")
    parser.add_argument(
        "--grains",
        action="store_true",
        help="also compare the partition grains (about 5 minutes; see bench_grain)",
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds one cycle may take (default 900)"
    )
    parser.add_argument("--collect", type=Path, help="only collect a stopped --keep run's reports")
    parser.add_argument(
        "--only",
        help="comma-separated step names to run (fresh, again, incremental, fresh_warm, postgres, "
        "engine); the others keep their values from the committed cycle.json",
    )
    args = parser.parse_args(argv)
    if args.collect:
        write_results(collect(args.collect))
        return
    root = Path(tempfile.mkdtemp(prefix="bench-cycle-"))
    # The PostgreSQL server runs as its own OS user when we are root: it must reach its folder.
    root.chmod(0o755)
    numba = root / "numba_cache"  # empty: a fresh clone has compiled nothing before make setup
    limit = args.timeout
    r: dict[str, Any] = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "targets": TARGETS,
        "timeout_per_cycle_s": limit,
    }
    now = r["date"]  # when this run's steps ran (with --only, ``date`` stays the kept one)
    if args.only:
        kept = json.loads((RESULTS / "cycle.json").read_text())
        r = {**kept, **{k: v for k, v in r.items() if k != "date"}}
        r["dates"] = dict(kept.get("dates", {"earlier steps": kept.get("date")}))
    steps: list[tuple[str, Callable[[], None]]] = [
        ("kernels compiled by make setup", lambda: r.update(kernels=kernels(numba))),
        ("start-up costs", lambda: r.update(startup=startup(_env(root / "startup", numba)))),
        ("fresh make run", lambda: _fresh(r, root, numba, limit)),
        (
            "again",
            lambda: r.update(
                again=_cycle(root / "fresh", _env(root / "fresh", numba), timeout_s=limit)
            ),
        ),
        (
            "incremental 6-hour cycle",
            lambda: r.update(incremental=incremental(root / "incremental", numba, limit)),
        ),
        (
            "fresh, numba warm",
            lambda: r.update(
                fresh_warm=_cycle(root / "warm", _env(root / "warm", numba), timeout_s=limit)
            ),
        ),
        ("postgres", lambda: _postgres(r, root, numba, limit)),
        ("engine path", lambda: _optimization(r, root, numba)),
    ]
    if args.grains:
        steps.append(("partition grains", lambda: r.update(grains=grains(root / "grains"))))
    if args.only:
        wanted = set(args.only.split(","))
        # The kernels always compile first: every cycle measured runs after ``make setup``.
        steps = [s for s in steps if STEP_NAMES[s[0]] in wanted | {"kernels"}]
    done: list[str] = []
    try:
        for label, step in steps:
            print(f"{label} ...", file=sys.stderr, flush=True)
            step()
            if args.only:
                # only the steps that finished name this run: a step that failed replaced nothing
                r["dates"].pop(",".join(done), None)
                done.append(STEP_NAMES[label])
                r["dates"][",".join(done)] = now
            write_results(r)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(markdown(r))


STEP_NAMES = {
    "kernels compiled by make setup": "kernels",
    "start-up costs": "startup",
    "fresh make run": "fresh",
    "again": "again",
    "incremental 6-hour cycle": "incremental",
    "fresh, numba warm": "fresh_warm",
    "postgres": "postgres",
    "engine path": "engine",
    "partition grains": "grains",
}


def kernels(numba: Path) -> dict[str, Any]:
    """``make setup``'s kernel compile (``python -m ffe_dagster.kernel_warmup``) into ``numba``."""
    load = _load()
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "ffe_dagster.kernel_warmup"],
        env={**os.environ, "NUMBA_CACHE_DIR": str(numba)},
        cwd=PROJECT_DIR,
        check=True,
    )
    return {
        "wall_s": round(time.monotonic() - started, 1),
        "load_before": load,
        "load_after": _load(),
    }


def _fresh(r: dict[str, Any], root: Path, numba: Path, limit: float) -> None:
    r["fresh"] = _cycle(root / "fresh", _env(root / "fresh", numba), timeout_s=limit)
    # setdefault: with --only, the PostgreSQL share of an earlier run stays beside it.
    r.setdefault("bookkeeping", {})["sqlite"] = _bookkeeping(r["fresh"])


def _postgres(r: dict[str, Any], root: Path, numba: Path, limit: float) -> None:
    (root / "pg").mkdir()
    pg_env = {"NUMBA_CACHE_DIR": str(numba), "FFE_TRIAL_PROFILE": "full"}
    r["postgres"] = _cycle(root / "pg", pg_env, postgres=True, timeout_s=limit)
    if "wall_s" in r["postgres"] and "wall_s" in r.get("fresh_warm", {}):
        r["postgres_ratio"] = round(r["postgres"]["wall_s"] / r["fresh_warm"]["wall_s"], 3)
    r.setdefault("bookkeeping", {})["postgres"] = _bookkeeping(r["postgres"])


def _optimization(r: dict[str, Any], root: Path, numba: Path) -> None:
    # The job of the numba-warm fresh cycle against the engine doing the same work: the same
    # bars and trials, level repeats included (the job's L3 and L4 repeat to 338 and 300
    # trials: 838 in all). make bench's engine path runs one try per level (550 trials) on
    # Optuna's unbatched journal, so its ratio is kept beside it, labelled, not as the target.
    warm = r.get("fresh_warm", {})
    job = warm.get("steps_s", {}).get("optimization_job")
    if job is None:
        r["optimization"] = "not measured: the warm fresh cycle timed out"
        return
    load = _load()
    same = engine_same_work(root / "warm", numba)
    load_after = _load()
    engine = engine_path()
    r["optimization"] = {
        "job_s": job,
        "job_trials": sum(warm.get("trials", {}).values()),
        "engine_s": same["seconds"],
        "engine_cpu_s": same["cpu_s"],
        "engine_trials": same["trials"],
        "ratio": round(job / same["seconds"], 3),
        "engine_load_before_after": f"{load} / {load_after}",
        "make_bench_engine_s": engine["seconds"],
        "make_bench_trials": engine["trials"],
        "ratio_vs_make_bench": round(job / engine["seconds"], 3),
    }


if __name__ == "__main__":
    main()
