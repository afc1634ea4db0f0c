"""``python -m ffe_dagster.cli run-cycle``: materialize the whole graph once, as ``make run`` does.

The cycle runs as three Dagster runs in the project's instance (DAGSTER_HOME), exactly what the
UI would launch: a single-run backfill of every bar partition, the regimes of every instrument,
then the curriculum and promotion. Each run is visible afterwards in ``make dev``.
"""

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from dagster import DagsterInstance, Definitions
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from ffe_dagster.config import load_curriculum, load_universe
from ffe_dagster.definitions import EXPORT_FILE, build_definitions
from ffe_dagster.partitions import DATE_DIM, INSTRUMENT_DIM, bar_partitions
from ffe_dagster.resources.registry import ParameterRegistryResource
from ffe_dagster.resources.warehouse import WarehouseResource
from ffe_dagster.settings import Settings


def _range_tags(first: str, last: str) -> dict[str, str]:
    return {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}


def _execute(defs: Definitions, job: str, instance: DagsterInstance, tags: dict[str, str]) -> str:
    started = time.monotonic()
    result = defs.resolve_job_def(job).execute_in_process(
        instance=instance, tags=tags, raise_on_error=True
    )
    print(f"  {job}: {result.run_id} succeeded in {time.monotonic() - started:.1f}s", flush=True)
    return result.run_id


def run_cycle(settings: Settings, instance: DagsterInstance, trigger: str = "manual") -> dict:
    """Materialize every asset once; return run ids, level outcomes and the export path."""
    defs = build_definitions(settings)
    bars_partitions = bar_partitions(load_universe(settings.universe_path))
    keys = bars_partitions.get_partition_keys()
    days = bars_partitions.get_partitions_def_for_dimension(DATE_DIM).get_partition_keys()
    instruments = bars_partitions.get_partitions_def_for_dimension(
        INSTRUMENT_DIM
    ).get_partition_keys()
    print(f"cycle: {len(days)} days x {len(instruments)} instruments = {len(keys)} partitions")
    # The CLI drives every step itself, so the cycle chain sensor must not start them again.
    tags = {"ffe/trigger": trigger, "ffe/no_chain": "1"}
    runs = {
        "ingest_job": _execute(
            defs,
            "ingest_job",
            instance,
            {**tags, **_range_tags(f"{days[0]}|{instruments[0]}", f"{days[-1]}|{instruments[-1]}")},
        ),
        "regimes_job": _execute(
            defs, "regimes_job", instance, {**tags, **_range_tags(instruments[0], instruments[-1])}
        ),
        "optimization_job": _execute(defs, "optimization_job", instance, tags),
    }
    warehouse = WarehouseResource(path=str(settings.warehouse_path))
    levels = {
        spec.level: warehouse.latest_level_result(spec.level)
        for spec in load_curriculum(settings.curriculum_path).levels
    }
    return {
        "runs": runs,
        "levels": {
            lv: {
                "passed": r["passed"],
                "mlflow_run_id": r.get("mlflow_run_id"),
                "chosen": (r["chosen"] or {}).get("params"),
            }
            for lv, r in levels.items()
            if r
        },
        "export": str(settings.export_dir / EXPORT_FILE),
    }


def _regime_state(
    registry: ParameterRegistryResource, regime: str, current: dict[str, Any] | None
) -> str:
    """One line per regime: the current set, the version in flight and its latest decision."""
    parts = [
        f"current v{current['version']} (level {current['level']})" if current else "no current"
    ]
    for version in registry.in_flight(regime):
        parts.append(f"v{version['version']} in {version['stage']}: {version['reason']}")
    if not parts[1:]:
        trail = registry.transitions(regime)
        if trail:
            last = trail[-1]
            parts.append(f"last decision: {last['action']} v{last['version']}: {last['reason']}")
    return "; ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="ffe_dagster")
    parser.add_argument("command", choices=["run-cycle"])
    parser.parse_args(argv)
    settings = Settings.from_env()
    started = time.monotonic()
    with DagsterInstance.get() as instance:
        report = run_cycle(settings, instance)
    export = json.loads(open(report["export"]).read())
    print(
        f"\ncycle finished in {time.monotonic() - started:.0f}s (trial profile "
        f"'{settings.trial_profile}')"
    )
    for level, info in report["levels"].items():
        verdict = "passed" if info["passed"] else "did not pass"
        print(f"  level {level}: {verdict}; MLflow run {info['mlflow_run_id']}")
    print(f"\npromoted parameters: {report['export']}")
    registry = ParameterRegistryResource(url=settings.registry_url)
    for regime, current in export["regimes"].items():
        print(f"  {regime}: {_regime_state(registry, regime, current)}")
    for change in export["changes"]:
        if change["action"] == "blocked":
            print(f"  {change['regime']} blocked: {change['reason']}")
    print(
        "\nlook at it: `make dev` (Dagster UI, http://127.0.0.1:3000), "
        "`make mlflow` (MLflow UI, http://127.0.0.1:5000)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
