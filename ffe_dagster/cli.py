"""``python -m ffe_dagster.cli run-cycle``: materialize the whole graph once, as ``make run`` does.

The cycle runs as up to three Dagster runs in the project's instance (DAGSTER_HOME), exactly
what the UI would launch: a single-run backfill of the bar partitions that are due (changed
since their last passing validation, or open; see ``ingest_plan``), the regimes of every
instrument, then the curriculum and promotion. With nothing due there is no ingest run, and no
regimes run while every instrument's regimes are materialized. Each run is visible afterwards
in ``make dev``, with every Dagster event; the terminal shows progress bars and a summary
(``-v`` adds Dagster's events).
"""

import argparse
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    BetaWarning,
    DagsterInstance,
    Definitions,
    PreviewWarning,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from ffe_dagster.config import Universe, load_curriculum, load_universe
from ffe_dagster.config.settings import Settings
from ffe_dagster.definitions import EXPORT_FILE, build_definitions
from ffe_dagster.ingest_plan import plan_ingest
from ffe_dagster.instance_storage import EVENT_BATCH_ENV, EVENT_BATCH_SIZE
from ffe_dagster.partitions import DATE_DIM, INSTRUMENT_DIM, bar_partitions
from ffe_dagster.resources.market_data import market_data_resource
from ffe_dagster.resources.registry import ParameterRegistryResource
from ffe_dagster.resources.warehouse import WarehouseResource
from ffe_dagster.schedules import cycle_windows
from ffe_dagster.terminal import CycleFacts, RegimeLine, console_run_config, cycle_summary


def _range_tags(first: str, last: str) -> dict[str, str]:
    return {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}


@dataclass(frozen=True, slots=True)
class StepTiming:
    """One run of the cycle: its wall time and the time spent inside its assets' bodies, as
    far as they report it (``compute_s`` metadata); the difference is Dagster's own work."""

    run_id: str
    wall_s: float
    compute_s: float | None


def _execute(
    defs: Definitions, job: str, instance: DagsterInstance, tags: dict[str, str], verbose: bool
) -> StepTiming:
    started = time.monotonic()
    result = defs.resolve_job_def(job).execute_in_process(
        instance=instance,
        tags=tags,
        raise_on_error=True,
        run_config=console_run_config(verbose),
    )
    wall = time.monotonic() - started
    # Every partition's materialization carries the same body time: count each asset once.
    bodies: dict[str, float] = {}
    for event in result.get_asset_materialization_events():
        value = event.materialization.metadata.get("compute_s")
        number = getattr(value, "value", value)
        if event.asset_key is not None and isinstance(number, int | float):
            bodies[event.asset_key.to_user_string()] = float(number)
    return StepTiming(result.run_id, wall, sum(bodies.values()) if bodies else None)


def run_cycle(
    settings: Settings,
    instance: DagsterInstance,
    trigger: str = "manual",
    *,
    verbose: bool = False,
    incremental: bool = False,
    everything: bool = False,
) -> dict:
    """Materialize every asset once; return run ids, step times, level outcomes and the export
    path. The ingest requests only the bar partitions that changed since their last passing
    validation, and the open one (``plan_ingest``); ``incremental`` requests what the cycle
    schedule would (the newest window of every instrument, see ``cycle_windows``) and
    ``everything`` the whole history. When no partition is due, the ingest run is not launched,
    nor the regimes run if every instrument's regimes are already materialized."""
    defs = build_definitions(settings)
    steps = cycle_steps(
        settings,
        instance,
        datetime.now(UTC),
        trigger,
        incremental=incremental,
        everything=everything,
    )
    timings = {job: _execute(defs, job, instance, t, verbose) for job, t in steps.items()}
    warehouse = WarehouseResource(path=str(settings.warehouse_path))
    levels = [
        r
        for spec in load_curriculum(settings.curriculum_path).levels
        if (r := warehouse.latest_level_result(spec.level))
    ]
    return {
        "runs": {job: t.run_id for job, t in timings.items()},
        "seconds": {job: t.wall_s for job, t in timings.items()},
        "compute_seconds": {job: t.compute_s for job, t in timings.items()},
        "levels": {
            r.level: {
                "passed": r.passed,
                "mlflow_run_id": r.mlflow_run_id,
                "chosen": r.chosen_params,
            }
            for r in levels
        },
        "level_results": levels,
        "export": str(settings.export_dir / EXPORT_FILE),
    }


def cycle_steps(
    settings: Settings,
    instance: DagsterInstance,
    now: datetime,
    trigger: str = "manual",
    *,
    incremental: bool = False,
    everything: bool = False,
) -> dict[str, dict[str, str]]:
    """The runs a cycle at ``now`` launches, in order, each job with its tags: the ingest over
    the partitions that are due (none: no ingest run), the regimes (left out when nothing was
    ingested and every instrument's regimes are materialized), the optimization."""
    universe = load_universe(settings.universe_path)
    instruments = (
        bar_partitions(universe)
        .get_partitions_def_for_dimension(INSTRUMENT_DIM)
        .get_partition_keys()
    )
    first, last = _ingest_range(settings, universe, instance, now, incremental, everything)
    # The CLI drives every step itself, so the cycle chain sensor must not start them again.
    tags = {"ffe/trigger": trigger, "ffe/no_chain": "1"}
    steps: dict[str, dict[str, str]] = {}
    if first is not None and last is not None:
        steps["ingest_job"] = {
            **tags,
            **_range_tags(f"{first}|{instruments[0]}", f"{last}|{instruments[-1]}"),
        }
    if steps or not _regimes_current(instance, instruments):
        steps["regimes_job"] = {**tags, **_range_tags(instruments[0], instruments[-1])}
    else:
        _say("regimes: no bars ingested, every instrument's regimes newer than its bars, skipped")
    steps["optimization_job"] = tags
    return steps


def _regimes_current(instance: DagsterInstance, instruments: Sequence[str]) -> bool:
    """True when every instrument's regimes were materialized after the newest validated bars
    (a regimes run that failed after an ingest leaves them older, and they are computed again)."""
    bars = instance.get_latest_materialization_event(AssetKey("validated_bars"))
    if bars is None:
        return False
    return all(
        instance.fetch_materializations(
            AssetRecordsFilter(
                asset_key=AssetKey("market_regimes"),
                asset_partitions=[instrument],
                after_timestamp=bars.timestamp,
            ),
            limit=1,
        ).records
        for instrument in instruments
    )


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _ingest_range(
    settings: Settings,
    universe: Universe,
    instance: DagsterInstance,
    now: datetime,
    incremental: bool,
    everything: bool,
) -> tuple[str | None, str | None]:
    """The first and last time window the ingest run requests (every instrument of each), or
    (None, None) when nothing is due."""
    bars_partitions = bar_partitions(universe)
    windows = bars_partitions.get_partitions_def_for_dimension(DATE_DIM).get_partition_keys()
    n = len(bars_partitions.get_partition_keys())
    if incremental or everything:
        if incremental:
            windows = cycle_windows(bars_partitions, now)
        _say(f"ingest: windows {windows[0]} .. {windows[-1]} of {n} bar partitions requested")
        return windows[0], windows[-1]
    plan = plan_ingest(
        universe,
        WarehouseResource(path=str(settings.warehouse_path)),
        market_data_resource(universe, settings.samples_dir),
        materialized=instance.get_materialized_partitions(AssetKey("validated_bars")),
        now=now,
    )
    _say(plan.describe())
    return plan.first_window, plan.last_window


def regime_lines(
    registry: ParameterRegistryResource, regimes: Sequence[str], run_id: str
) -> list[RegimeLine]:
    """Per regime, the stage it reached and why: this run's decisions as the registry recorded
    them (their reasons verbatim), else the version in flight or the current one."""
    lines: list[RegimeLine] = []
    for regime in regimes:
        current = registry.current(regime)
        mine = [t for t in registry.transitions(regime) if t.run_id == run_id]
        # Decisions that stored no version (a level that did not pass blocks its regime).
        noted = [d for d in registry.regime_decisions(regime) if d.run_id == run_id]
        flight = registry.in_flight(regime)
        if flight:
            stage = f"v{flight[0].version} in {flight[0].stage}"
        elif current is not None:
            stage = f"v{current.version} current (level {current.level})"
        else:
            stage = "nothing promoted"
        if mine:
            last = mine[-1]
            reason = f"{last.action} v{last.version}: {last.reason}"
        elif noted:
            reason = f"{noted[-1].action}: {noted[-1].reason}"
        elif flight:
            reason = flight[0].reason
        else:
            reason = "no decision this run"
        lines.append(RegimeLine(regime, stage, reason))
    return lines


def _facts(
    settings: Settings, report: dict[str, Any], seconds: float, export: dict[str, Any]
) -> CycleFacts:
    registry = ParameterRegistryResource(url=settings.registry_url)
    return CycleFacts(
        seconds=seconds,
        trial_profile=settings.trial_profile,
        step_seconds=report["seconds"],
        levels=report["level_results"],
        regimes=regime_lines(registry, list(export["regimes"]), report["runs"]["optimization_job"]),
        active=export.get("active", {}),
        run_ids=report["runs"],
        export_path=report["export"],
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="ffe_dagster")
    parser.add_argument("command", choices=["run-cycle"])
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also print Dagster's events (DEBUG)"
    )
    parser.add_argument(
        "--incremental",
        action="store_true",
        help="ingest only the newest window of every instrument, as the 6-hour schedule does",
    )
    parser.add_argument(
        "--all",
        action="store_true",
        dest="everything",
        help="ingest every bar partition again, changed or not",
    )
    parser.add_argument("--report", type=Path, help="also write the cycle's report here (JSON)")
    args = parser.parse_args(argv)
    if not args.verbose:
        # Notices that a Dagster API is beta or preview say nothing about this run; Optuna's
        # and MLflow's INFO lines (a study created, tables created) are in the UIs.
        warnings.filterwarnings("ignore", category=BetaWarning)
        warnings.filterwarnings("ignore", category=PreviewWarning)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    # Dagster hands a step's partition materializations (and a run's planned ones) to the event
    # log as one batch only with this set; dagster.yaml's event log then writes each batch in one
    # transaction instead of one per event (ffe_dagster/instance_storage.py).
    os.environ.setdefault(EVENT_BATCH_ENV, EVENT_BATCH_SIZE)
    settings = Settings.from_env()
    started = time.monotonic()
    with DagsterInstance.get() as instance:
        report = run_cycle(
            settings,
            instance,
            verbose=args.verbose,
            incremental=args.incremental,
            everything=args.everything,
        )
    seconds = time.monotonic() - started
    with open(report["export"]) as fh:
        export = json.load(fh)
    print("\n".join(cycle_summary(_facts(settings, report, seconds, export))))
    if args.report:
        rows = [r.to_json() for r in report["level_results"]]
        args.report.write_text(
            json.dumps({**report, "level_results": rows, "cycle_s": seconds}, indent=2, default=str)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
