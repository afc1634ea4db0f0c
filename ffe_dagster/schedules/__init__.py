"""The 6-hour cycle schedule."""

from collections.abc import Iterator
from datetime import datetime, timedelta

from dagster import (
    MultiPartitionsDefinition,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    TimeWindowPartitionsDefinition,
    schedule,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from ffe_dagster.partitions import DATE_DIM, INSTRUMENT_DIM


def cycle_windows(partitions: MultiPartitionsDefinition, now: datetime) -> list[str]:
    """The time partitions a cycle at ``now`` ingests: those holding the newest ended day or
    ``now`` (the open one exists only with an open-ended history); when neither exists yet
    (a closed history), the newest partition that has; before the history starts, none."""
    times = partitions.get_partitions_def_for_dimension(DATE_DIM)
    assert isinstance(times, TimeWindowPartitionsDefinition)
    keys = times.get_partition_keys(current_time=now)
    moments = (now - timedelta(days=1), now)
    chosen = [
        k
        for k in keys[-2:]  # windows are at least a day long: the two newest suffice
        if any(
            w.start <= m < w.end for w in [times.time_window_for_partition_key(k)] for m in moments
        )
    ]
    return chosen or list(keys[-1:])


def build_cycle_schedule(partitions: MultiPartitionsDefinition, cron: str) -> ScheduleDefinition:
    """Every ``cron`` tick, one run that ingests the newest window(s) of every instrument (see
    ``cycle_windows``): only bars newer than the last stored one are fetched, a day fetched
    completely before is skipped. The regimes, curriculum and promotion follow through the
    cycle chain sensor."""

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
        windows = cycle_windows(partitions, now)
        if not windows:
            yield SkipReason(f"no bar partition has started by {now.isoformat()}")
            return
        instruments = partitions.get_partitions_def_for_dimension(
            INSTRUMENT_DIM
        ).get_partition_keys()
        # Keys are ordered time first, so this range is exactly these windows x every instrument.
        yield RunRequest(
            run_key=f"{now.isoformat()}|{windows[0]}..{windows[-1]}",
            tags={
                "ffe/trigger": "schedule",
                ASSET_PARTITION_RANGE_START_TAG: f"{windows[0]}|{instruments[0]}",
                ASSET_PARTITION_RANGE_END_TAG: f"{windows[-1]}|{instruments[-1]}",
            },
        )

    return cycle_schedule
