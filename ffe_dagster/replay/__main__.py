"""``python -m ffe_dagster.replay --start 2022-01-01 --end 2024-07-01 --every weekly``.

Replays the system's cycles over the bundled history (or the validated bars of a warehouse,
``--warehouse``), once per ``--selection`` rule (the curriculum's own by default; ``--selection
best plateau`` replays both on the same history, sharing their Optuna studies), resumable in
``--folder``, and writes one report of all of them side by side to ``--out``
(``benchmarks/results`` by default) and to MLflow experiment ``ffe_replay``.
"""

import argparse
import logging
import os
import time
from dataclasses import replace
from datetime import UTC, date, datetime
from datetime import time as clock
from pathlib import Path
from typing import Any

import optuna

from ffe_dagster.assets.loading import load_level_data
from ffe_dagster.config import Universe, load_curriculum, load_promotion, load_universe
from ffe_dagster.config.settings import PROJECT_DIR, TRIAL_PROFILES, Settings
from ffe_dagster.core.promotion.config import PromotionConfig
from ffe_dagster.core.replay.equity import Trading
from ffe_dagster.core.replay.timeline import Cadence
from ffe_dagster.core.study.eras import LevelData
from ffe_dagster.core.study.level_specs import SELECTION_RULES, CurriculumSpec
from ffe_dagster.core.study.levels import entry_strategy
from ffe_dagster.replay.driver import ReplayConfig, bundled_history, history_of, run_replay
from ffe_dagster.replay.results import (
    EXPERIMENT,
    RuleCurve,
    build_report,
    combine_selections,
    write_report,
)
from ffe_dagster.resources.tracking import MlflowTrackingResource
from ffe_dagster.resources.warehouse import WarehouseResource
from ffe_dagster.sources.files import curriculum_signals


def _moment(text: str) -> datetime:
    return datetime.combine(date.fromisoformat(text), clock(0), tzinfo=UTC)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ffe_dagster.replay", description=__doc__)
    p.add_argument("--start", type=_moment, required=True, help="first cycle (UTC day)")
    p.add_argument("--end", type=_moment, required=True, help="end of the last period")
    p.add_argument("--every", type=Cadence, choices=list(Cadence), default=Cadence.WEEKLY)
    p.add_argument("--profile", choices=TRIAL_PROFILES, default="quick", help="trial counts")
    p.add_argument("--test-days", type=int, default=180, help="each cycle's test era, days")
    p.add_argument("--folder", type=Path, help="replay state (default: var/replay/...)")
    p.add_argument("--warehouse", type=Path, help="read validated_bars from this DuckDB file")
    p.add_argument(
        "--selection",
        nargs="+",
        choices=SELECTION_RULES,
        help="selection rule(s) to replay, one after another (default: the curriculum's)",
    )
    p.add_argument("--out", type=Path, default=PROJECT_DIR / "benchmarks" / "results")
    p.add_argument(
        "-v", "--verbose", action="store_true", help="also Optuna's and MLflow's INFO lines"
    )
    return p


def _replay_one(
    args: argparse.Namespace,
    curriculum: CurriculumSpec,
    universe: Universe,
    history: LevelData,
    base: Path,
    source: str,
    promotion: PromotionConfig,
) -> tuple[dict[str, Any], dict[str, RuleCurve]]:
    # One selection rule's replay in its own folder (records, registry), on the shared studies.
    config = ReplayConfig(
        start=args.start,
        end=args.end,
        every=args.every,
        folder=base / curriculum.selection,
        trial_profile=args.profile,
        test_days=args.test_days,
        studies=base / "optuna" / "studies.journal",
    )
    started = time.monotonic()
    resumed_cycles: list[int] = []

    def progress(index: int, total: int, record: dict, resumed: bool) -> None:
        if resumed:
            resumed_cycles.append(index)
        done = "stored" if resumed else f"{time.monotonic() - started:.0f} s"
        passed = [k for k, v in record["levels"].items() if v["passed"]]
        changes = [f"{c['regime']} {c['action']}" for c in record["changes"]]
        rule = curriculum.selection
        print(f"[{rule}] cycle {index + 1}/{total} {record['t'][:10]} ({done}): levels passed "
              f"{passed or 'none'}; {changes or 'no change'}", flush=True)  # fmt: skip

    records = run_replay(
        config, curriculum, universe, history, promotion=promotion, on_cycle=progress
    )
    trading = Trading(
        entry_strategy(curriculum, history.signals), curriculum.costs, history.periods_per_year
    )
    return build_report(
        records,
        history,
        trading,
        end=args.end,
        settings={
            "start": f"{args.start:%Y-%m-%d}",
            "end": f"{args.end:%Y-%m-%d}",
            "every": str(args.every),
            "trial_profile": args.profile,
            "test_days": args.test_days,
            "seconds": time.monotonic() - started,
            "cycles_resumed_from_store": len(resumed_cycles),
            "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "source": source,
        },
    )


def main(argv: list[str] | None = None) -> None:
    """Run the replay the arguments describe and write its report."""
    args = _parser().parse_args(argv)
    if not args.verbose:
        # One line per cycle is the progress; Optuna's "a study created / resumed" (several
        # per cycle, hundreds in a weekly replay) and MLflow's INFO lines would bury it.
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    settings = Settings.from_env()
    curriculum = load_curriculum(settings.curriculum_path)
    universe = load_universe(settings.universe_path)
    promotion = load_promotion(settings.promotion_path)
    if args.warehouse:
        stored = load_level_data(WarehouseResource(path=str(args.warehouse)), universe, 0)
        history = history_of(dict(stored.bars), universe)
    else:
        history = bundled_history(universe, settings.samples_dir)
    history = replace(history, signals=curriculum_signals(curriculum))
    name = f"{args.start:%Y%m%d}-{args.end:%Y%m%d}-{args.every}-{args.profile}-{args.test_days}"
    samples = settings.samples_dir.resolve()
    inside = samples.is_relative_to(PROJECT_DIR)  # the bundled files: say it short
    source = str(args.warehouse or (samples.relative_to(PROJECT_DIR) if inside else samples))
    base = args.folder or settings.var_dir / "replay" / name
    by_selection = {
        rule: _replay_one(
            args, replace(curriculum, selection=rule), universe, history, base, source, promotion
        )
        for rule in dict.fromkeys(args.selection or [curriculum.selection])
    }
    report, curves = combine_selections(by_selection)
    tracking = MlflowTrackingResource(
        tracking_uri=settings.mlflow_tracking_uri,
        artifact_dir=str(settings.mlflow_artifact_dir),
        experiment=EXPERIMENT,
    )
    paths = write_report(report, curves, args.out, tracking)
    print(f"report: {paths['md']}")


if __name__ == "__main__":
    main()
