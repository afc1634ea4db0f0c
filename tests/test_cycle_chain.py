"""The 6-hourly cycle chains its steps: ingest -> regimes -> curriculum and promotion."""

import pytest
from dagster import RunRequest, SkipReason
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from ffe_dagster.config.settings import Settings
from ffe_dagster.definitions import build_definitions
from ffe_dagster.sensors.cycle import next_step
from ffe_dagster.triggers import run_trigger

INSTRUMENTS = ["BTC_USDT", "ETH_USDT", "EUR_USD"]


def test_a_scheduled_ingest_launches_the_regimes_of_every_instrument() -> None:
    request = next_step(
        "ingest_job", "run-1", {"dagster/schedule_name": "cycle_schedule"}, INSTRUMENTS
    )
    assert isinstance(request, RunRequest)
    assert request.job_name == "regimes_job"
    assert request.run_key == "regimes-after-run-1"
    assert request.tags["ffe/trigger"] == "schedule"
    assert request.tags["ffe/cycle"] == "run-1"
    assert request.tags[ASSET_PARTITION_RANGE_START_TAG] == "BTC_USDT"
    assert request.tags[ASSET_PARTITION_RANGE_END_TAG] == "EUR_USD"


def test_regimes_launch_the_optimization_with_the_cycle_id_and_trigger() -> None:
    tags = {"ffe/cycle": "run-1", "ffe/trigger": "schedule", "dagster/sensor_name": "x"}
    request = next_step("regimes_job", "run-2", tags, INSTRUMENTS)
    assert isinstance(request, RunRequest)
    assert request.job_name == "optimization_job"
    assert request.tags == {"ffe/cycle": "run-1", "ffe/trigger": "schedule"}


@pytest.mark.parametrize(
    ("job", "tags"),
    [
        ("optimization_job", {}),  # the last step
        ("ingest_job", {"ffe/no_chain": "1"}),  # make run drives its own steps
    ],
)
def test_what_does_not_chain(job: str, tags: dict[str, str]) -> None:
    assert isinstance(next_step(job, "run-3", tags, INSTRUMENTS), SkipReason)


@pytest.mark.parametrize(
    ("tags", "trigger"),
    [
        ({"ffe/trigger": "sensor"}, "sensor"),
        ({"dagster/schedule_name": "cycle_schedule"}, "schedule"),
        ({"dagster/sensor_name": "regime_change_sensor"}, "sensor"),
        ({}, "manual"),
    ],
)
def test_the_trigger_is_carried(tags: dict[str, str], trigger: str) -> None:
    assert run_trigger(tags) == trigger


def test_the_chain_watches_ingest_and_regimes(tiny_settings: Settings) -> None:
    defs = build_definitions(tiny_settings)
    sensor = defs.resolve_sensor_def("cycle_chain_sensor")
    assert sensor.name == "cycle_chain_sensor"
    assert {j.name for j in sensor.jobs} == {"regimes_job", "optimization_job"}
    for name in ("run_failure_webhook", "regime_change_sensor"):
        assert defs.resolve_sensor_def(name).name == name
