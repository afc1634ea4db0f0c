"""The regime-change sensor: re-optimize when an instrument's confirmed regime changes."""

import json
from collections.abc import Iterator

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from ffe_dagster.config import Universe
from ffe_dagster.core.regimes import RegimeConfig, confirmed_regime
from ffe_dagster.resources.warehouse import WarehouseResource


def build_regime_sensor(universe: Universe) -> SensorDefinition:
    """Cursor = last confirmed regime per instrument (JSON). Whipsaws are ignored because only
    a regime that persisted with enough confidence counts (``confirmed_regime``)."""

    @sensor(
        name="regime_change_sensor",
        job_name="optimization_job",
        minimum_interval_seconds=300,
        default_status=DefaultSensorStatus.STOPPED,
        description="Launches the curriculum and promotion when an instrument's confirmed "
        "market regime changes (persistence and confidence thresholds filter whipsaws).",
    )
    def regime_change_sensor(
        context: SensorEvaluationContext, warehouse: WarehouseResource
    ) -> Iterator[RunRequest | SkipReason]:
        known: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        config = RegimeConfig()
        current = dict(known)
        changed: list[str] = []
        for inst in universe.instruments:
            regime = confirmed_regime(warehouse.read_regimes(inst.key), config)
            if regime is None:
                continue
            if known.get(inst.key) not in (None, regime.value):
                changed.append(f"{inst.key}:{known[inst.key]}->{regime.value}")
            current[inst.key] = regime.value
        context.update_cursor(json.dumps(current, sort_keys=True))
        if not changed:
            yield SkipReason(f"no confirmed regime change; current {current}")
            return
        yield RunRequest(
            run_key=";".join(changed) + "|" + json.dumps(current, sort_keys=True),
            tags={"ffe/trigger": "sensor", "ffe/regime_change": ",".join(changed)},
        )

    return regime_change_sensor
