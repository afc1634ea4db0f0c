"""``make bench-optimization``: the Dagster optimization job against the engine path, side by side.

One temporary ``var/`` and ``DAGSTER_HOME``; the bundled bars are ingested once by a quick
``run-cycle`` (which also fills the numba cache, so neither side below pays a compilation the
other does not). Then, each in its own process and timed inside it (imports excluded):

1. ``dagster``: ``optimization_job`` (the levels with docs/spec.md's trial counts, robustness,
   MLflow logging, plots, the vectorbt cross-check, promotion and the registry) on a new study
   storage.
2. ``engine``: the same levels through ``core.study.levels.run_level`` alone, on the same bars (read
   from the same warehouse), the same study configuration (seed, sampler, batch, patience,
   repeats), warm starts and skip rule, on a new journal file opened as the job opens it
   (``OptunaStorageResource``: batched writes): what ``make bench`` times, with the job's repeats
   and storage.
3. ``again``: ``optimization_job`` once more on the storage of 1, with nothing changed.

Results: ``benchmarks/results/optimization.json`` and ``optimization.md``, with the load average.

    python -m benchmarks.bench_optimization
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import machine
from ffe_dagster.config.settings import PROJECT_DIR

RESULTS = PROJECT_DIR / "benchmarks" / "results"
TARGET_RATIO = 1.3  # issue 12: the job within 1.3x the engine path


def _load() -> float:
    return float(Path("/proc/loadavg").read_text().split(" ")[0])


def _dagster() -> dict[str, Any]:
    from dagster import DagsterInstance

    from ffe_dagster.config import load_curriculum
    from ffe_dagster.config.settings import Settings
    from ffe_dagster.definitions import build_definitions
    from ffe_dagster.resources.warehouse import WarehouseResource

    settings = Settings.from_env()
    job = build_definitions(settings).resolve_job_def("optimization_job")
    with DagsterInstance.get() as instance:
        started = time.perf_counter()
        result = job.execute_in_process(instance=instance, tags={"ffe/no_chain": "1"})
        seconds = time.perf_counter() - started
    assert result.success
    warehouse = WarehouseResource(path=str(settings.warehouse_path))
    levels = []
    for spec in load_curriculum(settings.curriculum_path).levels:
        r = warehouse.latest_level_result(spec.level)
        levels.append(
            {
                "level": spec.level,
                "trials": r.n_trials if r else 0,
                "new_trials": r.new_trials if r else 0,
                "skipped": bool(r and r.skipped),
                "reused": bool(r and r.reused),
                "chosen": r.chosen_params if r else None,
            }
        )
    return {"seconds": seconds, "levels": levels}


def _engine(studies: str) -> dict[str, Any]:
    from ffe_dagster.assets.curriculum import study_fingerprint
    from ffe_dagster.assets.loading import load_level_data
    from ffe_dagster.config import load_curriculum, load_universe
    from ffe_dagster.config.settings import Settings
    from ffe_dagster.core.study.levels import level_study_config, run_level
    from ffe_dagster.core.study.progression import Decision
    from ffe_dagster.resources.studies import OptunaStorageResource
    from ffe_dagster.resources.warehouse import WarehouseResource

    settings = Settings.from_env()
    curriculum = load_curriculum(settings.curriculum_path)
    universe = load_universe(settings.universe_path)
    warehouse = WarehouseResource(path=str(settings.warehouse_path))
    profile = settings.trial_profile
    started, cpu = time.perf_counter(), time.process_time()
    data = load_level_data(warehouse, universe, curriculum.holdout_days)
    studies_resource = OptunaStorageResource(url=studies)
    warm, chain, skip = None, 0, False
    levels = []
    for spec in curriculum.levels:
        if skip:  # the previous level met the skip rule, as in the level assets
            levels.append({"level": spec.level, "trials": 0, "skipped": True, "chosen": None})
            skip = False
            continue
        name = f"{spec.asset}-{study_fingerprint(spec, curriculum, data)}"
        outcome = run_level(
            spec,
            curriculum,
            data,
            study=level_study_config(
                curriculum, name, studies_resource.storage(name), spec.trials[profile]
            ),
            warm_start=warm,
            walk_forward_trials=curriculum.robustness.walk_forward_trials[profile],
            chain_trials=chain,
        )
        warm = outcome.chosen.params if outcome.chosen else warm
        chain = outcome.chain_trials
        skip = outcome.progression.decision is Decision.SKIP_NEXT
        levels.append(
            {
                "level": spec.level,
                "trials": len(outcome.study.trials),
                "skipped": False,
                "chosen": dict(outcome.chosen.params) if outcome.chosen else None,
            }
        )
    return {
        "seconds": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu,
        "levels": levels,
    }


def _child(part: str, env: dict[str, str], *args: str) -> dict[str, Any]:
    load = _load()
    wall = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_optimization", part, *args],
        cwd=PROJECT_DIR,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        **result,
        "process_wall_s": time.perf_counter() - wall,
        "load_before": load,
        "load_after": _load(),
    }


def _markdown(r: dict[str, Any]) -> str:
    def trials(part: dict[str, Any]) -> str:
        return ", ".join(
            f"L{lv['level']} {'skipped' if lv['skipped'] else lv['trials']}"
            for lv in part["levels"]
        )

    lines = [
        "# Optimization job vs engine path",
        "",
        f"Machine: {r['machine']}. Date: {r['date']}. Trial profile: {r['profile']}.",
        "Timed inside each process (imports excluded); load average (1 min) before/after each.",
        "",
        "| run | seconds | process wall s | load | trials per level |",
        "|---|---|---|---|---|",
    ]
    for key, label in (
        ("dagster", "optimization_job, new studies"),
        ("engine", "engine path (run_level only)"),
        ("again", "optimization_job again, nothing new"),
    ):
        p = r[key]
        lines.append(
            f"| {label} | {p['seconds']:.1f} | {p['process_wall_s']:.1f} | "
            f"{p['load_before']:.1f}/{p['load_after']:.1f} | {trials(p)} |"
        )
    lines += [
        "",
        f"Job / engine: {r['ratio']:.2f}x (target <= {TARGET_RATIO}x): "
        f"{'met' if r['ratio'] <= TARGET_RATIO else 'not met'}. "
        f"Same choices on every level: {r['same_choices']}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    """Run one part (``dagster``, ``engine URL``) or the whole comparison."""
    if argv and argv[0] == "dagster":
        print(json.dumps(_dagster()))
        return
    if argv and argv[0] == "engine":
        print(json.dumps(_engine(argv[1])))
        return
    work = Path(tempfile.mkdtemp(prefix="ffe-bench-opt-"))
    home = work / "dagster_home"
    home.mkdir()
    env = {
        **os.environ,
        "FFE_VAR_DIR": str(work / "var"),
        "DAGSTER_HOME": str(home),
        "FFE_TRIAL_PROFILE": "quick",
    }
    for key in ("FFE_STUDIES_URL", "FFE_WAREHOUSE", "FFE_REGISTRY_URL", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    print("ingesting the bundled bars (quick cycle) ...", file=sys.stderr)
    subprocess.run(
        [sys.executable, "-m", "ffe_dagster.cli", "run-cycle"],
        cwd=PROJECT_DIR,
        env=env,
        check=True,
        capture_output=True,
    )
    full = {**env, "FFE_TRIAL_PROFILE": "full"}
    job_env = {**full, "FFE_STUDIES_URL": f"journal:///{work / 'job.journal'}"}
    print("optimization_job ...", file=sys.stderr)
    dagster = _child("dagster", job_env)
    print("engine path ...", file=sys.stderr)
    engine = _child("engine", full, f"journal:///{work / 'engine.journal'}")
    print("optimization_job again ...", file=sys.stderr)
    again = _child("dagster", job_env)
    result = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "profile": "full",
        "dagster": dagster,
        "engine": engine,
        "again": again,
        "ratio": dagster["seconds"] / engine["seconds"],
        "target_ratio": TARGET_RATIO,
        "same_choices": [lv["chosen"] for lv in dagster["levels"]]
        == [lv["chosen"] for lv in engine["levels"]],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "optimization.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "optimization.md").write_text(_markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    main(sys.argv[1:])
