"""Level verdict changes between cycles: a level that passed its criteria and now does not (or
the reverse) is announced through the notification outbox."""

from datetime import UTC, datetime

from ffe_dagster.core.reporting.notifications import Notification, verdict_change
from ffe_dagster.core.study.level_result import LevelResult
from ffe_dagster.core.study.level_specs import CurriculumSpec
from ffe_dagster.resources.registry import ParameterRegistryResource
from ffe_dagster.resources.warehouse import WarehouseResource, decode_result_json


def _last_two(warehouse: WarehouseResource, level: int) -> list[tuple[str | None, LevelResult]]:
    frame = warehouse.read_table(
        "SELECT run_id, CAST(result AS VARCHAR) AS result FROM level_results "
        "WHERE level = ? ORDER BY created_at DESC LIMIT 2",
        [level],
    )
    return [
        (r["run_id"], LevelResult.from_row(decode_result_json(r["result"])))
        for r in frame.iter_rows(named=True)
    ]


def announce_verdict_changes(
    registry: ParameterRegistryResource,
    warehouse: WarehouseResource,
    curriculum: CurriculumSpec,
    now: datetime | None = None,
) -> list[Notification]:
    """Enqueue a notification for every level whose newest result has another verdict than
    the one before; a change already announced (same level run) is not enqueued again."""
    out: list[Notification] = []
    outbox = registry.outbox()
    for spec in curriculum.levels:
        results = _last_two(warehouse, spec.level)
        if len(results) < 2:
            continue
        (run_id, latest), (_, previous) = results
        notification = verdict_change(
            level=spec.level,
            regimes=list(spec.promotes),
            previous=previous,
            latest=latest,
            latest_run_id=run_id,
            at=now or datetime.now(UTC),
        )
        if notification is not None and outbox.add(notification):
            out.append(notification)
    return out
