"""``make bench``: backtest throughput and the full curriculum, engine against the naive approach.

Each measurement runs in its own process so its peak RSS is its own. Results go to
``benchmarks/results/engine.json`` and ``benchmarks/results/engine.md``.

    python -m benchmarks.bench_engine            # everything (several minutes: the naive runs)
    python -m benchmarks.bench_engine throughput # one part, printed as JSON
"""

import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numba
import numpy as np
import optuna
import pandas as pd

from benchmarks.common import curriculum, level_data
from ffe_dagster.core.backtest.reference import Direction, Segment, simulate
from ffe_dagster.core.study.evaluation import LevelEvaluator, Params, Period, trade_params
from ffe_dagster.core.study.level_specs import build_segments
from ffe_dagster.core.study.levels import entry_strategy, level_windows, run_level
from ffe_dagster.core.study.optimize import StudyConfig
from ffe_dagster.core.study.search_space import build_distributions
from ffe_dagster.resources.optuna_storage import open_storage

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS: dict[str, tuple[tuple[str, str], ...]] = {
    # name -> (symbol, interval) pairs; every file is real (ffe_dagster/data/samples/README.md)
    "1h_2020_2024": (("BTC_USDT", "1h"), ("ETH_USDT", "1h"), ("EUR_USD", "1h")),
    "5m_crypto_2022_2023": (("BTC_USDT", "5m"), ("ETH_USDT", "5m"), ("EUR_USD", "1h")),
}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _random_params(n: int, seed: int) -> list[Params]:
    rng = np.random.default_rng(seed)
    return [
        {
            "stop_loss_pct": float(rng.uniform(0.5, 5.0)),
            "take_profit_pct": float(rng.uniform(0.5, 10.0)),
            "position_size_pct": float(rng.uniform(1.0, 3.0)),
            "trailing_stop_pct": float(rng.uniform(1.0, 4.0)),
            "stop_mode": str(rng.choice(["fixed", "trailing"])),
            "fast_window": int(rng.integers(5, 51)),
            "slow_window": int(rng.integers(20, 201)),
        }
        for _ in range(n)
    ]


@numba.njit(cache=True, parallel=True)
def _single_pass(
    close: np.ndarray, high: np.ndarray, low: np.ndarray, signals: np.ndarray, n_trials: int
) -> np.ndarray:
    # The floor a backtest loop cannot beat: read the same arrays once per trial, hold a position
    # from the signals, and fold each bar's return into a mean and a drawdown.
    out = np.empty(n_trials)
    for t in numba.prange(n_trials):
        position = 0.0
        equity = 1.0
        peak = 1.0
        worst = 0.0
        total = 0.0
        for i in range(1, close.shape[0]):
            r = position * (close[i] / close[i - 1] - 1.0)
            if high[i] < low[i]:
                r = 0.0
            equity *= 1.0 + r
            peak = max(peak, equity)
            worst = max(worst, 1.0 - equity / peak)
            total += r
            s = signals[t % signals.shape[0], i]
            if s != 0:
                position = float(s)
        out[t] = total + worst
    return out


def throughput() -> dict[str, Any]:
    """Bar-evaluations per second: engine, single-pass floor, vectorbt from_signals + stats."""
    data = level_data(["BTC_USDT", "ETH_USDT"], "5m", holdout_days=0)
    segments = [
        Segment(
            s,
            f["ts"].dt.replace_time_zone(None).to_numpy(),
            f["open"].to_numpy(),
            f["high"].to_numpy(),
            f["low"].to_numpy(),
            f["close"].to_numpy(),
            data.periods_per_year[s],
        )
        for s, f in data.bars.items()
    ]
    bars = sum(len(s) for s in segments)
    cur = curriculum()
    evaluator = LevelEvaluator(segments, entry_strategy(cur), Direction.BOTH, cur.costs, 0.6, 0.2)
    batch = _random_params(64, seed=1)
    evaluator.evaluate_many(batch[:2], Period.ALL)  # compile / load the numba cache
    for p in batch:
        evaluator.signals(p)  # signals are cached per study; time the simulation itself
    start = time.perf_counter()
    evaluator.evaluate_many(batch, Period.ALL)
    engine_s = time.perf_counter() - start

    close = np.concatenate([s.close for s in segments])
    high = np.concatenate([s.high for s in segments])
    low = np.concatenate([s.low for s in segments])
    signal_rows = np.stack([evaluator.signals(p) for p in batch])
    _single_pass(close, high, low, signal_rows, 2)
    start = time.perf_counter()
    _single_pass(close, high, low, signal_rows, len(batch))
    floor_s = time.perf_counter() - start

    n_vbt = 4
    start = time.perf_counter()
    for params in batch[:n_vbt]:
        for segment, (lo, hi) in zip(segments, _segment_bounds(segments), strict=True):
            pf = simulate(
                segment,
                evaluator.signals(params)[lo:hi],
                direction=Direction.BOTH,
                params=trade_params(params),
                costs=cur.costs,
            )
            pf.stats(settings={"freq": "5min", "year_freq": "365 days"})
    vbt_s = time.perf_counter() - start
    evals = bars * len(batch)
    return {
        "data": "real Binance BTC/USDT and ETH/USDT 5-minute bars, 2022-01-01..2023-09-30 "
        f"({bars:,} bars in all: the longest continuous 5-minute span bundled)",
        "bars": bars,
        "engine_trials": len(batch),
        "engine_seconds": engine_s,
        "engine_bar_evals_per_s": evals / engine_s,
        "single_pass_seconds": floor_s,
        "single_pass_bar_evals_per_s": evals / floor_s,
        "engine_vs_single_pass": engine_s / floor_s,
        "vectorbt_trials": n_vbt,
        "vectorbt_seconds": vbt_s,
        "vectorbt_bar_evals_per_s": bars * n_vbt / vbt_s,
        "engine_speedup_vs_vectorbt": (evals / engine_s) / (bars * n_vbt / vbt_s),
        "threads": numba.get_num_threads(),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _segment_bounds(segments: Sequence[Segment]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    pos = 0
    for s in segments:
        out.append((pos, pos + len(s)))
        pos += len(s)
    return out


def curriculum_engine(dataset: str) -> dict[str, Any]:
    """The four levels with docs/spec.md's trial counts (100/100/150/200) on the engine."""
    cur = curriculum()
    pairs = DATASETS[dataset]
    data = _mixed_level_data(pairs, cur.holdout_days)
    workdir = tempfile.mkdtemp(prefix="ffe-bench-")
    storage = open_storage(f"journal:///{workdir}/studies.journal")
    start = time.perf_counter()
    previous: Params | None = None
    levels: list[dict[str, Any]] = []
    for spec in cur.levels:
        t0 = time.perf_counter()
        outcome = run_level(
            spec,
            cur,
            data,
            study=StudyConfig(
                study_name=f"bench-{spec.asset}",
                storage=storage,
                n_trials=spec.trials["full"],
                seed=cur.seed,
                constraints=cur.constraints,
                batch_size=cur.optimizer.batch_size,
            ),
            warm_start=previous,
            walk_forward_trials=cur.robustness.walk_forward_trials["full"],
            max_tries=1,
        )
        previous = outcome.chosen.params if outcome.chosen else previous
        levels.append(
            {
                "level": spec.level,
                "trials": len(outcome.study.trials),
                "seconds": time.perf_counter() - t0,
                "study_seconds": outcome.study.seconds,
                "bars": sum(s[3] for s in outcome.segments),
            }
        )
    shutil.rmtree(workdir, ignore_errors=True)
    return {
        "dataset": dataset,
        "storage": "Optuna journal file",
        "trials": sum(lv["trials"] for lv in levels),
        "seconds": time.perf_counter() - start,
        "levels": levels,
        "peak_rss_mb": _peak_rss_mb(),
        "note": "includes level 4's robustness: 4 walk-forward studies of 48 trials, DSR, PBO, "
        "15 cost variants, parameter importance",
    }


def _mixed_level_data(pairs: Sequence[tuple[str, str]], holdout_days: int) -> Any:
    parts = [level_data([s], interval, holdout_days) for s, interval in pairs]
    merged: dict[str, dict[str, Any]] = {"bars": {}, "regimes": {}, "ppy": {}, "holdout": {}}
    for part in parts:
        merged["bars"].update(part.bars)
        merged["regimes"].update(part.regimes)
        merged["ppy"].update(part.periods_per_year)
        merged["holdout"].update(part.holdout_start)
    return type(parts[0])(
        bars=merged["bars"],
        regimes=merged["regimes"],
        periods_per_year=merged["ppy"],
        holdout_start=merged["holdout"],
    )


def curriculum_naive(dataset: str, fraction: float) -> dict[str, Any]:
    """The naive approach: Optuna ``optimize()`` calling vectorbt ``from_signals`` + ``stats()``
    per trial and segment, on the same level data, with the same samplers and objectives.

    ``fraction`` < 1 runs that share of each level's trials and scales the time up (stated in the
    result); the per-trial cost of this approach does not depend on the trial count.
    """
    cur = curriculum()
    data = _mixed_level_data(DATASETS[dataset], cur.holdout_days)
    strategy = entry_strategy(cur)
    dists = build_distributions(cur.parameters)
    start = time.perf_counter()
    trials_run = 0
    trials_wanted = 0
    for spec in cur.levels:
        segments = build_segments(
            level_windows(spec, data),
            data.bars,
            data.periods_per_year,
            holdout_start=data.holdout_start,
            min_bars=cur.min_segment_bars,
        )
        n = spec.trials["full"]
        trials_wanted += n
        run_n = max(1, math.ceil(n * fraction))
        objective = _naive_objective(segments, strategy, spec.direction, cur, dists)
        study = optuna.create_study(
            directions=["maximize", "maximize", "minimize"],
            sampler=optuna.samplers.TPESampler(seed=cur.seed),
        )
        study.optimize(objective, n_trials=run_n)
        trials_run += run_n
    seconds = time.perf_counter() - start
    return {
        "dataset": dataset,
        "trials_run": trials_run,
        "trials": trials_wanted,
        "seconds_measured": seconds,
        "seconds": seconds * trials_wanted / trials_run,
        "extrapolated": trials_run < trials_wanted,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _naive_objective(
    segments: Sequence[Segment],
    strategy: Any,
    direction: Direction,
    cur: Any,
    dists: dict[str, Any],
) -> Callable[[optuna.Trial], tuple[float, float, float]]:
    from ffe_dagster.core.study.level_specs import split_bounds

    def objective(trial: optuna.Trial) -> tuple[float, float, float]:
        params = {name: trial._suggest(name, dist) for name, dist in dists.items()}
        sharpe: list[float] = []
        win: list[float] = []
        dd: list[float] = []
        for segment in segments:
            a, _ = split_bounds(len(segment), cur.train_fraction, cur.validation_fraction)
            part = segment.slice(0, a)
            signals = strategy.signals_for(part, params)
            pf = simulate(
                part, signals, direction=direction, params=trade_params(params), costs=cur.costs
            )
            freq = pd.Timedelta(np.median(np.diff(part.ts)))
            stats = pf.stats(settings={"freq": freq, "year_freq": "365 days"})
            sharpe.append(float(stats["Sharpe Ratio"]))
            win.append(float(stats["Win Rate [%]"]))
            dd.append(float(stats["Max Drawdown [%]"]))
        clean = [0.0 if math.isnan(v) or math.isinf(v) else v for v in (*sharpe, *win, *dd)]
        k = len(segments)
        return (
            float(np.mean(clean[:k])),
            float(np.mean(clean[k : 2 * k])),
            float(np.mean(clean[2 * k :])),
        )

    return objective


def _run_part(args: list[str]) -> dict[str, Any]:
    # One measurement per process, so peak RSS and numba caches are honest.
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_engine", *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _markdown(result: dict[str, Any]) -> str:
    t = result["throughput"]
    lines = [
        "# Engine benchmark",
        "",
        f"Machine: {result['machine']}. Date: {result['date']}.",
        "",
        f"Throughput on {t['data']}:",
        "",
        "| engine | bar-evaluations / s | note |",
        "|---|---|---|",
        f"| numba engine (batch of {t['engine_trials']}, {t['threads']} threads) | "
        f"{t['engine_bar_evals_per_s']:,.0f} | {t['engine_vs_single_pass']:.2f}x the "
        "single-pass floor's time |",
        f"| single-pass numba loop (floor) | {t['single_pass_bar_evals_per_s']:,.0f} | |",
        f"| vectorbt from_signals + stats | {t['vectorbt_bar_evals_per_s']:,.0f} | "
        f"engine is {t['engine_speedup_vs_vectorbt']:,.0f}x faster |",
        "",
        "Full curriculum (4 levels, docs/spec.md trial counts, level-4 robustness included):",
        "",
        "| data | trials | engine wall s (studies only) | engine peak RSS MB | naive wall s | "
        "naive RSS MB | speed-up (on the engine's whole wall time) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["curriculum"]:
        naive = row["naive"]
        tag = " (extrapolated)" if naive["extrapolated"] else ""
        lines.append(
            f"| {row['engine']['dataset']} | {row['engine']['trials']} | "
            f"{row['engine']['seconds']:.1f} "
            f"({sum(lv['study_seconds'] for lv in row['engine']['levels']):.1f}) | "
            f"{row['engine']['peak_rss_mb']:.0f} | "
            f"{naive['seconds']:.0f}{tag} | {naive['peak_rss_mb']:.0f} | "
            f"{naive['seconds'] / row['engine']['seconds']:.0f}x |"
        )
    lines += ["", "Targets: curriculum <= 60 s and <= 2 GB; >= 10x the naive approach; engine "
              "within 2x of the single-pass floor.", ""]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    """Run one part (``throughput``, ``engine DATASET``, ``naive DATASET FRACTION``) or all."""
    if argv and argv[0] == "throughput":
        print(json.dumps(throughput()))
        return
    if argv and argv[0] == "engine":
        print(json.dumps(curriculum_engine(argv[1])))
        return
    if argv and argv[0] == "naive":
        print(json.dumps(curriculum_naive(argv[1], float(argv[2]))))
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    # The naive approach costs seconds per trial: a stated share of the trials is run and the
    # time scaled to the full count (its per-trial cost does not grow with the count).
    naive_fraction = {"1h_2020_2024": 0.1, "5m_crypto_2022_2023": 0.02}
    result: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "throughput": _run_part(["throughput"]),
        "curriculum": [],
    }
    for dataset, fraction in naive_fraction.items():
        print(f"curriculum on {dataset} ...", file=sys.stderr)
        result["curriculum"].append(
            {
                "engine": _run_part(["engine", dataset]),
                "naive": _run_part(["naive", dataset, str(fraction)]),
            }
        )
    (RESULTS / "engine.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "engine.md").write_text(_markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    main(sys.argv[1:])
