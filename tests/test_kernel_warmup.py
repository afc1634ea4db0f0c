"""``make setup``'s kernel warm-up leaves nothing for a level on real bars to compile.

After ``python -m ffe_dagster.kernel_warmup`` on a numba cache, a new process that runs the
cycle's backtest path on bundled bars (the batch engine, per-trial returns, the vectorbt
cross-check) must load every numba function it calls from that cache: no dispatcher may miss
it (a miss means numba compiled a signature the warm-up did not cover, i.e. the first cycle
would still pay for compilation).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from ffe_dagster.config.settings import PROJECT_DIR

PROBE = """
import json, sys
import polars as pl
from numba.core.registry import CPUDispatcher
from ffe_dagster.config.settings import PACKAGE_DIR
from ffe_dagster.core.backtest.reference import CostModel, Direction
from ffe_dagster.core.backtest.strategies import get_strategy
from ffe_dagster.core.study.evaluation import LevelEvaluator, Period
from ffe_dagster.core.study.level_specs import bars_to_segment

segments = []
for symbol in ("BTC_USDT", "EUR_USD"):
    bars = pl.read_parquet(PACKAGE_DIR / "data" / "samples" / f"{symbol}_1h.parquet").head(3000)
    segments.append(bars_to_segment(bars, symbol, 8760.0))
params = {"stop_loss_pct": 2.0, "take_profit_pct": 4.0, "position_size_pct": 2.0,
          "trailing_stop_pct": 2.0, "fast_window": 12, "slow_window": 48}
batch = [{**params, "stop_mode": m} for m in ("fixed", "trailing")]
for direction in Direction:
    ev = LevelEvaluator(segments, get_strategy("sma_crossover"), direction, CostModel(), 0.6, 0.2)
    ev.evaluate_many(batch, Period.TRAIN)
    ev.returns(batch[1], Period.VALIDATION)
    ev.full_analysis(batch[0], Period.ALL)

hits, misses = 0, {}
for name, module in list(sys.modules.items()):
    if not name.startswith(("ffe_dagster.core.backtest", "vectorbt")):
        continue
    for attr, value in list(vars(module).items()):
        if isinstance(value, CPUDispatcher):
            hits += sum(value.stats.cache_hits.values())
            missed = sum(value.stats.cache_misses.values())
            if missed:
                misses[f"{name}.{attr}"] = missed
print(json.dumps({"hits": hits, "misses": misses}))
"""


def _run(args: list[str], cache: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    return subprocess.run(
        [sys.executable, *args], env=env, cwd=PROJECT_DIR, capture_output=True, text=True
    )


def test_after_the_warm_up_a_level_on_real_bars_compiles_nothing() -> None:
    # The cache make setup filled (or this test fills it: slow once, then seconds).
    cache = os.environ.get("NUMBA_CACHE_DIR", str(Path(PROJECT_DIR) / "var" / "numba_cache"))
    warm = _run(["-m", "ffe_dagster.kernel_warmup"], cache)
    assert warm.returncode == 0, warm.stderr
    assert "numba kernels ready" in warm.stderr

    probe = _run(["-c", PROBE], cache)
    assert probe.returncode == 0, probe.stderr
    stats = json.loads(probe.stdout.strip().splitlines()[-1])
    assert stats["misses"] == {}, f"compiled in the cycle's path: {stats['misses']}"
    # The engine's batch kernel, its segment kernel and vectorbt's were all loaded from disk.
    assert stats["hits"] >= 3
