"""What `make bench-postgres` runs (trial count, batch, objective, the reference) and the Markdown
of its results."""

from typing import Any

TRIALS = 500
BATCH = 16  # the project's default (curriculum optimizer.batch_size, StudyConfig.batch_size)
# The figures: 500 TPE trials on PostgreSQL, 1 worker 20 s, 2 workers 11.5 s.
REFERENCE_S = {1: 20.0, 2: 11.5}
OBJECTIVE = (
    "cheap deterministic function of the parameters (no backtest): every parameter scaled to "
    "[0, 1] (a choice by its index), Sharpe = 2 - 8 * mean squared distance to a fixed point, "
    "win rate and drawdown linear in half the parameters each, trade count in the last; some "
    "trials (a quarter of random ones) break the curriculum's constraints, so the constrained "
    "path of the sampler runs too. Time measured is the sampler's and the storage's, not"
    " backtests'."
)


def markdown(result: dict[str, Any]) -> str:
    """The results as the Markdown committed beside their JSON."""
    shared = result["shared_study"]
    one = {(w.get("storage", "postgresql"), w["workers"]): w for w in shared}
    lines = [
        "# Storage benchmark (`make bench-postgres`)",
        "",
        f"Machine: {result['machine']}. Date: {result['date']}. Optuna {result['optuna']}, "
        f"PostgreSQL {result['postgresql']} (private server on 127.0.0.1, fsync off as "
        "`ffe_dagster.local_postgres` starts it), SQLAlchemy via psycopg2. Whole benchmark: "
        f"{result['benchmark_seconds']:.0f} s. Load average (1 min) "
        f"{result['load_average_1min']['before']:.2f} before, "
        f"{result['load_average_1min']['after']:.2f} after (other work on the machine counts); "
        f"benchmark, workers and server ran at niceness {result['niceness']}.",
        "",
        f"Every run: {TRIALS} trials through `ffe_dagster.core.study.optimize.run_study`, "
        f'multi-objective TPE (`sampler="tpe"`, constant liar) unless marked random, batches of '
        f"{BATCH}, the curriculum's {result['parameters']} parameters and constraints.",
        f"Objective: {OBJECTIVE}",
        "",
        f"## {TRIALS} trials, one PostgreSQL study, several worker processes",
        "",
        "`postgresql` is Optuna's RDB storage, `postgresql_journal` the journal in PostgreSQL "
        "(`ffe_dagster/resources/journal_postgres.py`, production's default).",
        "",
        "| storage | workers | wall s | trials / s | speed-up vs 1 worker | "
        "wall s incl. process start | workers' CPU s | issue's reference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in shared:
        ref = REFERENCE_S.get(row["workers"])
        ref_text = f"{ref:.1f} s for 500 ({500 / ref:.1f} trials/s)" if ref else "-"
        kind = row.get("storage", "postgresql")
        lines.append(
            f"| {kind} | {row['workers']} | {row['wall_seconds']:.1f} | "
            f"{row['trials_per_second']:.1f} | "
            f"{one[kind, 1]['wall_seconds'] / row['wall_seconds']:.2f}x | "
            f"{row['wall_seconds_with_process_start']:.1f} | {row['workers_cpu_seconds']:.1f} | "
            f"{ref_text} |"
        )
    lines += [
        "",
        "Wall s runs from the moment every worker has imported and opened its storage to the "
        "last worker's end; each run was checked: "
        f"{shared[-1]['check']} (the benchmark stops with an error otherwise). Each worker runs "
        f"{TRIALS} / workers trials (near-equal shares) with its own seed; the study is created "
        "once by the parent.",
        "",
        f"## Per-trial cost of each storage, 1 worker, {result['trials']} trials",
        "",
        "| storage | sampler | wall s | ms / trial | overhead vs in-memory, ms / trial | "
        "client CPU ms / trial |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["one_worker"]:
        lines.append(
            f"| {row['storage']} | {row['sampler']} | {row['seconds']:.2f} | "
            f"{row['ms_per_trial']:.1f} | {row['overhead_ms_per_trial']:+.1f} | "
            f"{1000.0 * row['cpu_seconds'] / row['trials']:.1f} |"
        )
    lines += [
        "",
        "Client CPU is the measuring process's own CPU time (the PostgreSQL server's is not in "
        "it): it moves less than wall time when other work shares the machine.",
        "",
        *result["reading"],
        "",
    ]
    return "\n".join(lines)


def reading(result: dict[str, Any]) -> list[str]:
    """What the figures say, in sentences for the Markdown."""
    runs = {(r["storage"], r["sampler"]): r for r in result["one_worker"]}
    shared = {
        r["workers"]: r
        for r in result["shared_study"]
        if r.get("storage", "postgresql") == "postgresql"
    }
    journal = {
        r["workers"]: r for r in result["shared_study"] if r.get("storage") == "postgresql_journal"
    }
    tpe_mem, rnd_mem = (
        runs["memory", "tpe"]["ms_per_trial"],
        runs["memory", "random"]["ms_per_trial"],
    )
    pg_tpe = runs["postgresql", "tpe"]["overhead_ms_per_trial"]
    pg_rnd = runs["postgresql", "random"]["overhead_ms_per_trial"]
    # Compared per trial: a run with --trials other than 500 still compares.
    ratio_1 = shared[1]["trials_per_second"] / (500 / REFERENCE_S[1])
    ratio_2 = shared[2]["trials_per_second"] / (500 / REFERENCE_S[2])
    lines = [
        "How to read it:",
        "",
        f"- The TPE sampler itself costs {tpe_mem - rnd_mem:.1f} ms per trial (in-memory TPE "
        f"{tpe_mem:.1f} ms minus in-memory random {rnd_mem:.1f} ms): with no storage at all, "
        f"{TRIALS} TPE trials take {runs['memory', 'tpe']['seconds']:.1f} s. That part grows "
        "with the study's size and does not shrink with a faster storage.",
        f"- PostgreSQL adds {pg_rnd:.1f} ms per trial with the random sampler (the writes of "
        f"ask/tell: params, values, constraints, user attrs) and {pg_tpe:.1f} ms with TPE "
        "(TPE also reads the study's trials at every ask; Optuna's cache in front of RDB "
        "storages keeps that read incremental).",
        f"- Against the issue's reference (500 TPE trials on PostgreSQL: 20 s with 1 worker, "
        f"11.5 s with 2, i.e. 25.0 and 43.5 trials/s): here "
        f"{shared[1]['trials_per_second']:.1f} and {shared[2]['trials_per_second']:.1f} trials/s "
        f"({TRIALS} trials), {ratio_1:.2f}x and {ratio_2:.2f}x the reference's speed. The "
        "reference machine and objective are not known; the speed-up from 1 to 2 "
        f"workers is {shared[1]['wall_seconds'] / shared[2]['wall_seconds']:.2f}x here and "
        f"{REFERENCE_S[1] / REFERENCE_S[2]:.2f}x there.",
        f"- 4 workers: {shared[4]['trials_per_second']:.1f} trials/s, "
        f"{shared[1]['wall_seconds'] / shared[4]['wall_seconds']:.2f}x one worker; 8 workers: "
        f"{shared[8]['trials_per_second']:.1f} trials/s, "
        f"{shared[1]['wall_seconds'] / shared[8]['wall_seconds']:.2f}x, on "
        f"{result['cores']} cores shared with the PostgreSQL server (and any other work on the "
        "machine): TPE's sampling is CPU-bound, so beyond the core count more workers only help "
        "by taking a larger share of a busy machine. 8 workers finishing with every check "
        "passed is the optuna/optuna#5582 setup (many workers, one PostgreSQL study) surviving.",
    ]
    if ("postgresql_journal", "tpe") in runs and journal:
        pj_tpe = runs["postgresql_journal", "tpe"]["overhead_ms_per_trial"]
        pj_rnd = runs["postgresql_journal", "random"]["overhead_ms_per_trial"]
        lines.append(
            f"- The journal in PostgreSQL adds {pj_rnd:.1f} ms per trial with the random "
            f"sampler and {pj_tpe:.1f} ms with TPE, against {pg_rnd:.1f} and {pg_tpe:.1f} ms for "
            "Optuna's RDB storage: it keeps the study in memory and writes each batch's asks "
            "and tells as one INSERT each. Shared by 1, 2, 4 and 8 workers: "
            + ", ".join(f"{journal[n]['trials_per_second']:.1f}" for n in sorted(journal))
            + " trials/s (RDB: "
            + ", ".join(f"{shared[n]['trials_per_second']:.1f}" for n in sorted(shared))
            + "). A batch's ask, the TPE sampling included, holds the stream's lock, so with "
            "this cheap objective (nothing but sampling) the workers take turns; what runs side "
            "by side is the evaluation of the batches, the backtests in a real study."
        )
    return lines
