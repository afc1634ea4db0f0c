"""Two worker processes optimize one Optuna study at once on PostgreSQL (production mode's
"many workers, one study"), through the project's own ``run_study`` and ``open_storage``, on
the journal in PostgreSQL and on Optuna's RDB storage."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ffe_dagster.config.settings import PROJECT_DIR
from ffe_dagster.resources.optuna_storage import open_storage

STUDY = "two_workers"
TRIALS_PER_WORKER = 12
BATCH = 4

# Each worker runs this. Its batch objective is cheap and deterministic, and writes the worker's
# id into ``exposure_pct``: run_study stores every metric in the trial's user attr "metrics", so
# the storage itself says which process told each trial. The first batch waits until both workers
# are in their first batch: by then both have read the study's COMPLETE count (zero, nothing has
# been told yet), so each adds exactly its own ``n_trials`` and the total is deterministic.
WORKER = """
import json, sys, time
from pathlib import Path
from ffe_dagster.core.study.level_specs import Constraints, ParamRange
from ffe_dagster.core.backtest.metrics import Metrics
from ffe_dagster.core.study.optimize import StudyConfig, run_study
from ffe_dagster.resources.optuna_storage import open_storage

args = json.loads(sys.argv[1])
worker, barrier = args["worker"], Path(args["barrier"])
first = [True]

def evaluate(batch):
    if first[0]:
        first[0] = False
        (barrier / f"ready-{worker}").touch()
        deadline = time.monotonic() + 60
        while len(list(barrier.glob("ready-*"))) < 2:
            if time.monotonic() > deadline:
                raise TimeoutError("the other worker never reached its first batch")
            time.sleep(0.02)
    return [
        Metrics(
            sharpe=-((p["x"] - 1.0) ** 2),
            sortino=0.0,
            max_drawdown_pct=abs(p["x"]),
            win_rate_pct=50.0 + p["y"],
            profit_factor=1.0,
            total_return_pct=0.0,
            n_trades=100,
            avg_trade_bars=1.0,
            exposure_pct=float(worker),
        )
        for p in batch
    ]

outcome = run_study(
    evaluate,
    [ParamRange("x", -5.0, 5.0), ParamRange("y", 0.0, 10.0, step=1.0)],
    StudyConfig(
        study_name=args["study"],
        storage=open_storage(args["url"], stream=args["study"]),
        n_trials=args["n_trials"],
        seed=worker,
        constraints=Constraints(min_trades=1, max_drawdown_pct=100.0, min_win_rate_pct=0.0),
        batch_size=args["batch"],
        fail_stale_running=False,
    ),
)
print(json.dumps({"resumed": outcome.resumed_trials, "new": outcome.new_trials}))
"""


def test_two_processes_share_one_study(studies_url: str, tmp_path: Path) -> None:
    # The parent creates the study first so the workers do not race on its creation, which is
    # not what this test is about (production creates a study once, then starts workers).
    optuna.create_study(
        study_name=STUDY,
        storage=open_storage(studies_url, stream=STUDY),
        directions=["maximize", "maximize", "minimize"],
    )
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                json.dumps(
                    {
                        "worker": worker,
                        "barrier": str(tmp_path),
                        "study": STUDY,
                        "url": studies_url,
                        "n_trials": TRIALS_PER_WORKER,
                        "batch": BATCH,
                    }
                ),
            ],
            cwd=PROJECT_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for worker in (1, 2)
    ]
    reports = []
    for proc in workers:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert reports == [{"resumed": 0, "new": TRIALS_PER_WORKER}] * 2

    study = optuna.load_study(study_name=STUDY, storage=open_storage(studies_url, stream=STUDY))
    trials = study.get_trials(deepcopy=False)
    total = 2 * TRIALS_PER_WORKER
    assert len(trials) == total
    assert {t.state for t in trials} == {TrialState.COMPLETE}  # nothing RUNNING, nothing lost
    assert sorted(t.number for t in trials) == list(range(total))  # no duplicate number
    told_by = Counter(int(t.user_attrs["metrics"]["exposure_pct"]) for t in trials)
    assert told_by == {1: TRIALS_PER_WORKER, 2: TRIALS_PER_WORKER}
