"""``make bench-integrity``: the power and size of the whole pipeline, measured on worlds.

Every world runs the curriculum and one promotion cycle through the code the assets use
(``benchmarks/integrity_run.py``), with the user's gate thresholds unchanged:

- **null worlds** (no edge exists): random entry signals at the built-in strategies' signal
  density on the real bundled bars, and the built-in strategies on block-shuffled bars. The
  false-promotion rate is the share of regime-worlds whose candidate passes COLD.
- **planted-edge worlds**: signal files on the real bars whose side matches the next
  ``HORIZON`` bars' move with a chosen probability, at three edge sizes. Power is the share of
  worlds in which the planted regimes' sets pass COLD (every regime is planted: the signals
  cover all bars).
- **real**: the bundled bars with each built-in strategy.

Results go to ``benchmarks/results/integrity.json`` and ``.md``. Seeded: a re-run with the same
counts reproduces every world.

    python -m benchmarks.bench_integrity                 # the full benchmark
    python -m benchmarks.bench_integrity --scale 0.1     # a tenth of the worlds (debugging)
"""

import argparse
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import polars as pl
import yaml

from benchmarks.common import curriculum, load_bars, machine
from benchmarks.integrity_report import markdown, summarize
from benchmarks.integrity_run import (
    CURRICULUM_FILE,
    WorldOutcome,
    planted_sharpe,
    run_world,
    temp_folder,
)
from benchmarks.integrity_worlds import (
    block_shuffled_bars,
    planted_signals,
    random_signals,
)
from ffe_dagster.core.backtest.strategies import STRATEGIES
from ffe_dagster.core.study.level_specs import bars_to_segment

RESULTS = Path(__file__).resolve().parent / "results"
INSTRUMENTS = ("BTC_USDT", "ETH_USDT", "EUR_USD")
BUILT_IN = ("sma_crossover", "donchian_breakout", "rsi_reversion")
SEED = 20261201
HORIZON = 24  # bars: the planted edge is on the sign of the next day's move
HIT_RATES = (0.60, 0.67, 0.75)  # three edge sizes; 0.5 is no edge
SHUFFLE_BLOCK = 168  # bars: one week of hourly bars per shuffled block
COUNTS = {"random": 15, "shuffled": 15, "planted": 10}  # worlds per kind (planted: per size)
DENSITY_DRAWS = 8  # random parameter sets per built-in strategy when measuring its density


@dataclass(frozen=True, slots=True)
class WorldSpec:
    """One world: what kind, its seed, its strategy and (planted worlds) its edge size."""

    kind: str  # random, shuffled, planted, real
    index: int
    seed: int
    strategy: str
    density: float = 0.0
    hit_rate: float = 0.5


@dataclass(frozen=True, slots=True)
class WorldResult:
    """A world's spec, what the pipeline decided, and (planted) the edge's true Sharpe."""

    spec: WorldSpec
    outcome: WorldOutcome
    true_sharpe_holdout: float | None = None
    true_sharpe_history: float | None = None


def _real_bars() -> dict[str, pl.DataFrame]:
    return {k: load_bars(k, "1h") for k in INSTRUMENTS}


def builtin_density(bars: dict[str, pl.DataFrame], seed: int) -> dict[str, float]:
    """Share of bars with a signal per built-in strategy, averaged over random parameter sets
    drawn from the curriculum's ranges and over the instruments."""
    rng = np.random.default_rng(seed)
    ranges = _strategy_ranges()
    out: dict[str, float] = {}
    for name in BUILT_IN:
        strategy = STRATEGIES[name]
        shares: list[float] = []
        for _ in range(DENSITY_DRAWS):
            params = {n: float(rng.integers(lo, hi + 1)) for n, (lo, hi) in ranges[name].items()}
            for key, frame in bars.items():
                segment = bars_to_segment(frame, key, 1.0)
                shares.append(float((strategy.signals_for(segment, params) != 0).mean()))
        out[name] = float(np.mean(shares))
    return out


def _strategy_ranges() -> dict[str, dict[str, tuple[int, int]]]:
    # The strategies' own ranges as curriculum.yaml states them, so the density follows the
    # user's file.
    raw = yaml.safe_load(CURRICULUM_FILE.read_text())["strategy_parameters"]
    return {
        name: {k: (int(v["low"]), int(v["high"])) for k, v in raw[name].items()}
        for name in BUILT_IN
    }


def world_specs(scale: float, density: float) -> list[WorldSpec]:
    """Every world of the benchmark, each with its own seed."""
    specs: list[WorldSpec] = []

    def count(kind: str) -> int:
        return max(1, round(COUNTS[kind] * scale))

    for i in range(count("random")):
        specs.append(WorldSpec("random", i, SEED + 1000 + i, "file_signals", density))
    for i in range(count("shuffled")):
        specs.append(WorldSpec("shuffled", i, SEED + 2000 + i, BUILT_IN[i % len(BUILT_IN)]))
    for k, hit in enumerate(HIT_RATES):
        for i in range(count("planted")):
            seed = SEED + 3000 + 100 * k + i
            specs.append(WorldSpec("planted", i, seed, "file_signals", density, hit))
    for i, name in enumerate(BUILT_IN):
        specs.append(WorldSpec("real", i, SEED, name))
    return specs


def _signal_file(frames: dict[str, pl.DataFrame], folder: Path) -> Path:
    path = folder / "signals.parquet"
    pl.concat(
        [f.with_columns(pl.lit(k).alias("instrument")) for k, f in frames.items()]
    ).write_parquet(path)
    return path


def run_spec(args: tuple[WorldSpec, str, str]) -> WorldResult:
    """Build one world from its spec and run it (a pool task: arguments in one tuple)."""
    spec, profile, root = args
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per study is noise here
    bars = _real_bars()
    rng = np.random.default_rng(spec.seed)
    folder = temp_folder(Path(root), f"{spec.kind}{spec.index}")
    signal_file = None
    if spec.kind == "shuffled":
        bars = {k: block_shuffled_bars(b, SHUFFLE_BLOCK, rng) for k, b in bars.items()}
    elif spec.kind == "random":
        frames = {k: random_signals(b["ts"], spec.density, rng) for k, b in bars.items()}
        signal_file = _signal_file(frames, folder)
    elif spec.kind == "planted":
        frames = {
            k: planted_signals(
                b, density=spec.density, hit_rate=spec.hit_rate, horizon=HORIZON, rng=rng
            )
            for k, b in bars.items()
        }
        signal_file = _signal_file(frames, folder)
    outcome = run_world(bars, spec.strategy, signal_file, folder, profile)
    truth: tuple[float | None, float | None] = (None, None)
    if spec.kind == "planted" and signal_file is not None:
        truth = planted_sharpe(bars, signal_file, curriculum().holdout_days, folder)
    shutil.rmtree(folder, ignore_errors=True)
    return WorldResult(spec, outcome, *truth)


def run_all(specs: Sequence[WorldSpec], profile: str, workers: int) -> list[WorldResult]:
    """Every world, over a pool of ``workers`` processes (results in spec order)."""
    root = tempfile.mkdtemp(prefix="bench-integrity-")
    tasks = [(s, profile, root) for s in specs]
    try:
        if workers <= 1:
            return [run_spec(t) for t in tasks]
        # spawn: a fresh interpreter per worker, nothing inherited from this process's state.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            out: list[WorldResult] = []
            for k, result in enumerate(pool.imap(run_spec, tasks, chunksize=1)):
                out.append(result)
                s = result.spec
                print(
                    f"[{k + 1}/{len(tasks)}] {s.kind} {s.strategy} hit={s.hit_rate:g} "
                    f"#{s.index}: {result.outcome.seconds:.1f}s, COLD passed "
                    f"{sum(r.passed_cold for r in result.outcome.regimes)}/"
                    f"{len(result.outcome.regimes)}",
                    flush=True,
                )
            return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and write its results."""
    parser = argparse.ArgumentParser(description="make bench-integrity")
    parser.add_argument("--scale", type=float, default=1.0, help="share of the world counts")
    parser.add_argument("--profile", default="quick", choices=["quick", "full"])
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--output", default="integrity", help="results file name, no suffix")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    load = os.getloadavg()
    densities = builtin_density(_real_bars(), SEED)
    density = float(np.mean(list(densities.values())))
    specs = world_specs(args.scale, density)
    results = run_all(specs, args.profile, args.workers)
    seconds = time.perf_counter() - started
    summary = summarize(
        results,
        settings={
            "trial_profile": args.profile,
            "trials_per_level": {str(s.level): s.trials[args.profile] for s in curriculum().levels},
            "walk_forward_trials_run": 8,
            "workers": args.workers,
            "seed": SEED,
            "horizon_bars": HORIZON,
            "hit_rates": list(HIT_RATES),
            "shuffle_block_bars": SHUFFLE_BLOCK,
            "density_per_strategy": densities,
            "density": density,
            "worlds": {
                k: sum(s.kind == k for s in specs)
                for k in ("random", "shuffled", "planted", "real")
            },
        },
    )
    summary["seconds"] = round(seconds, 1)
    summary["machine"] = machine()
    summary["load_average_at_start"] = [round(x, 2) for x in load]
    summary["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    summary["worlds"] = [_world_json(r) for r in results]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.output}.json").write_text(json.dumps(summary, indent=2, default=str))
    text = markdown(summary)
    (RESULTS / f"{args.output}.md").write_text(text)
    print(text)
    return summary


def _world_json(result: WorldResult) -> dict[str, Any]:
    return {
        "spec": asdict(result.spec),
        "true_sharpe_holdout": result.true_sharpe_holdout,
        "true_sharpe_history": result.true_sharpe_history,
        **asdict(result.outcome),
    }


if __name__ == "__main__":
    main()
