"""The 6-hour cycle schedule."""

from collections.abc import Iterator
from datetime import datetime

from dagster import (
    MultiPartitionKey,
    MultiPartitionsDefinition,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from ffe_dagster.partitions import DATE_DIM, INSTRUMENT_DIM


def latest_day(partitions: MultiPartitionsDefinition, now: datetime) -> str | None:
    """The newest day partition that has ended by ``now`` (None before the history starts)."""
    days = partitions.get_partitions_def_for_dimension(DATE_DIM)
    keys = [k for k in days.get_partition_keys(current_time=now) if k < now.date().isoformat()]
    return keys[-1] if keys else None


def open_day(partitions: MultiPartitionsDefinition, now: datetime) -> str | None:
    """Today's partition when the history is open-ended (it exists only then), else None."""
    days = partitions.get_partitions_def_for_dimension(DATE_DIM)
    today = now.date().isoformat()
    return today if today in days.get_partition_keys(current_time=now) else None


def build_cycle_schedule(partitions: MultiPartitionsDefinition, cron: str) -> ScheduleDefinition:
    """Every ``cron`` tick: ingest the newest ended day of every instrument and, with an
    open-ended history, today's open partition (only bars newer than the last stored one are
    fetched; a day fetched completely before is skipped). The regimes, curriculum and promotion
    follow through their automation conditions."""

    @schedule(
        name="cycle_schedule",
        cron_schedule=cron,
        job_name="ingest_job",
        execution_timezone="UTC",
        description="The optimization cycle (default every 6 hours): ingest the newest bars, "
        "then regimes, curriculum and promotion update automatically.",
    )
    def cycle_schedule(context: ScheduleEvaluationContext) -> Iterator[RunRequest | SkipReason]:
        now = context.scheduled_execution_time
        days = [d for d in (latest_day(partitions, now), open_day(partitions, now)) if d]
        if not days:
            yield SkipReason(f"no day partition has ended by {now.isoformat()}")
            return
        instruments = partitions.get_partitions_def_for_dimension(INSTRUMENT_DIM)
        for instrument in instruments.get_partition_keys():
            for day in days:
                yield RunRequest(
                    run_key=f"{now.isoformat()}|{instrument}|{day}",
                    partition_key=MultiPartitionKey({DATE_DIM: day, INSTRUMENT_DIM: instrument}),
                    tags={"ffe/trigger": "schedule"},
                )

    return cycle_schedule
