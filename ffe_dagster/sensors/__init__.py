"""The regime-change sensor: re-optimize the affected regime when an instrument's confirmed
regime changes; the promotion run then switches that instrument's active set."""

import json
from collections.abc import Iterator

from dagster import (
    AssetKey,
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from ffe_dagster.config import Universe
from ffe_dagster.core.regimes.detection import RegimeConfig, confirmed_regime
from ffe_dagster.core.study.level_specs import CurriculumSpec
from ffe_dagster.resources.warehouse import WarehouseResource


def affected_assets(curriculum: CurriculumSpec, regimes: set[str]) -> list[AssetKey]:
    """The level assets that promote any of ``regimes`` (DEFAULT's level when none does), and
    ``promoted_parameters``."""
    levels = [spec.asset for spec in curriculum.levels if regimes & set(spec.promotes)]
    if not levels:
        levels = [spec.asset for spec in curriculum.levels if "DEFAULT" in spec.promotes]
    return [AssetKey(a) for a in levels] + [AssetKey("promoted_parameters")]


def build_regime_sensor(universe: Universe, curriculum: CurriculumSpec) -> SensorDefinition:
    """Cursor = last confirmed regime per instrument (JSON). Whipsaws are ignored because only
    a regime that persisted with enough confidence counts (``confirmed_regime``). A change
    re-optimizes only the levels that promote the new regime, then runs the promotion, which
    switches the instrument's active set in the export."""

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
        entered: set[str] = set()
        for inst in universe.instruments:
            regime = confirmed_regime(warehouse.read_regimes(inst.key), config)
            if regime is None:
                continue
            if known.get(inst.key) not in (None, regime.value):
                changed.append(f"{inst.key}:{known[inst.key]}->{regime.value}")
                entered.add(regime.value)
            current[inst.key] = regime.value
        context.update_cursor(json.dumps(current, sort_keys=True))
        if not changed:
            yield SkipReason(f"no confirmed regime change; current {current}")
            return
        yield RunRequest(
            run_key=";".join(changed) + "|" + json.dumps(current, sort_keys=True),
            asset_selection=affected_assets(curriculum, entered),
            tags={
                "ffe/trigger": "sensor",
                "ffe/regime_change": ",".join(changed),
                "ffe/regimes": ",".join(sorted(entered)),
            },
        )

    return regime_change_sensor
