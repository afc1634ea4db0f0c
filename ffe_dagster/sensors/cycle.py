"""The cycle chain: ingest -> regimes -> curriculum and promotion, one run after the other.

The schedule launches ``ingest_job``; when it succeeds this sensor launches ``regimes_job`` over
every instrument, and when that succeeds, ``optimization_job``. Chaining on run success (rather
than on asset freshness) makes a failed step stop the cycle where it failed, keeps the trigger
and a cycle id on every run, and needs nothing but the daemon's sensor loop.
"""

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunStatusSensorContext,
    SensorDefinition,
    SkipReason,
    run_status_sensor,
)
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from ffe_dagster.triggers import CYCLE_TAG, TRIGGER_TAG, run_cycle_id, run_trigger

NO_CHAIN_TAG = "ffe/no_chain"  # set on runs that must not start the next step (the CLI's own)


def next_step(
    job_name: str, run_id: str, tags: dict[str, str], instruments: list[str]
) -> RunRequest | SkipReason:
    """The run that follows a successful ``job_name`` run in the cycle, or why there is none."""
    if tags.get(NO_CHAIN_TAG):
        return SkipReason(f"run {run_id} asked not to chain ({NO_CHAIN_TAG})")
    carried = {CYCLE_TAG: run_cycle_id(tags, run_id), TRIGGER_TAG: run_trigger(tags).value}
    if job_name == "ingest_job":
        if not instruments:
            return SkipReason("no instruments configured")
        return RunRequest(
            run_key=f"regimes-after-{run_id}",
            job_name="regimes_job",
            tags={
                **carried,
                ASSET_PARTITION_RANGE_START_TAG: instruments[0],
                ASSET_PARTITION_RANGE_END_TAG: instruments[-1],
            },
        )
    if job_name == "regimes_job":
        return RunRequest(
            run_key=f"optimization-after-{run_id}", job_name="optimization_job", tags=carried
        )
    return SkipReason(f"{job_name} ends the cycle")


def build_cycle_chain_sensor(
    jobs: list[UnresolvedAssetJobDefinition], instruments: list[str]
) -> SensorDefinition:
    """A run-status sensor over ``ingest_job`` and ``regimes_job`` that launches the next step."""
    by_name = {j.name: j for j in jobs}

    @run_status_sensor(
        name="cycle_chain_sensor",
        run_status=DagsterRunStatus.SUCCESS,
        monitored_jobs=[by_name["ingest_job"], by_name["regimes_job"]],
        request_jobs=[by_name["regimes_job"], by_name["optimization_job"]],
        default_status=DefaultSensorStatus.RUNNING,
        description="Chains the 6-hourly cycle: a successful ingest_job launches regimes_job, "
        "a successful regimes_job launches optimization_job (curriculum and promotion).",
    )
    def cycle_chain_sensor(context: RunStatusSensorContext) -> RunRequest | SkipReason:
        run = context.dagster_run
        return next_step(run.job_name, run.run_id, dict(run.tags), instruments)

    return cycle_chain_sensor
