"""``make bench-cycle``'s report: the targets of issue 12 and the results written as
``benchmarks/results/cycle.json`` and ``cycle.md`` (``bench_cycle.py`` measures)."""

import json
from collections.abc import Mapping
from typing import Any

from ffe_dagster.config.settings import PROJECT_DIR

RESULTS = PROJECT_DIR / "benchmarks" / "results"
TARGETS = {  # issue 12
    "fresh_s": 60.0,
    "again_s": 30.0,
    "incremental_s": 30.0,
    "bookkeeping_share": 0.25,
    "postgres_ratio": 1.5,
    "optimization_ratio": 1.3,
}


def _wall(r: Mapping[str, Any], *path: str) -> Any:
    node: Any = r
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return "not measured"
        node = node[key]
    return node


def markdown(r: dict[str, Any]) -> str:
    """``cycle.md`` for the results ``r`` (``cycle.json``'s content)."""
    t = TARGETS
    rows = [
        (
            "`make run`, fresh clone (install and kernel compile excluded)",
            ("fresh",),
            f"<= {t['fresh_s']:.0f} s",
        ),
        ("`make run` again, no new bars", ("again",), f"<= {t['again_s']:.0f} s"),
        ("6-hour incremental cycle", ("incremental", "cycle"), f"<= {t['incremental_s']:.0f} s"),
        ("fresh cycle, SQLite, numba cache warm", ("fresh_warm",), "(reference for PostgreSQL)"),
        ("`make run-postgres` cycle, numba cache warm", ("postgres",), "-"),
    ]
    lines = [
        "# The main job: `make bench-cycle`",
        "",
        f"{r['machine']}; {r['date']}. The 1-minute load average before and after each run is "
        f"in cycle.json ({r.get('load_range', '?')} over this benchmark): the machine is shared "
        "with other processes, so every time here is inflated by them.",
        "",
        "| what | wall (s) | runs (s) | outside the runs (s) | load before/after | target |",
        "|---|---|---|---|---|---|",
    ]
    for label, path, target in rows:
        run = _wall(r, *path)
        if isinstance(run, Mapping) and "wall_s" in run:
            steps = ", ".join(f"{k} {v}" for k, v in run["steps_s"].items())
            load = f"{run['load_before']} / {run['load_after']}"
            outside = run.get("outside_runs_s", "")
            lines.append(f"| {label} | {run['wall_s']} | {steps} | {outside} | {load} | {target} |")
        elif isinstance(run, Mapping):
            lines.append(
                f"| {label} | timed out after {run['timed_out_after_s']} s | | | | {target} |"
            )
        else:
            lines.append(f"| {label} | not measured | | | | {target} |")
    lines.append("")
    if "kernels" in r:
        k = r["kernels"]
        lines.append(
            f"- `make setup`'s numba kernel compile into an empty cache (install, before every "
            f"cycle above): {k['wall_s']} s (load {k['load_before']} / {k['load_after']})"
        )
    if "startup" in r:
        up = r["startup"]
        lines.append(
            "- start-up, new interpreter each, median of 3 (load "
            f"{up['load_before']} / {up['load_after']}): Python {up['python_start_s']} s, "
            f"`import ffe_dagster.definitions` {up['import_definitions_s']} s, "
            f"that and `build_definitions()` {up['build_definitions_s']} s, "
            f"`dagster definitions validate` {up['definitions_validate_s']} s"
        )
    for key, text in (
        ("postgres_ratio", "PostgreSQL / SQLite, both numba-warm"),
        ("bookkeeping", "Dagster's share of the first backfill (ingest_job wall - asset bodies)"),
        ("optimization", "optimization job vs `make bench` engine path, same bars and trials"),
    ):
        lines.append(f"- {text}: `{json.dumps(r.get(key, 'not measured'))}`")
    if r.get("dates"):
        # --only runs keep the other steps' values: say which run each value comes from
        runs = "; ".join(f"{steps}: {when}" for steps, when in r["dates"].items())
        lines.append(f"- when the steps ran (a later run replaces earlier values): {runs}")
    lines += [
        "",
        'Partition grains: see grain.json / README "Partitions".'
        if not r.get("grains")
        else f"Partition grains: `{json.dumps(r['grains'])}`",
        "",
        "`make test` is not timed here.",
    ]
    return "\n".join(lines) + "\n"


def write_results(result: dict[str, Any]) -> None:
    """Write ``cycle.json`` and ``cycle.md``, after every measurement, so a benchmark stopped
    part way keeps what it measured."""
    loads = [
        float(v[k])
        for v in (result.get(n) for n in ("fresh", "again", "fresh_warm", "postgres"))
        if isinstance(v, Mapping)
        for k in ("load_before", "load_after")
    ]
    if loads:
        result["load_range"] = f"{min(loads)} .. {max(loads)}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cycle.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "cycle.md").write_text(markdown(result))
