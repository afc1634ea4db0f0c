"""The Definitions: asset graph snapshot, jobs, schedule requests and the regime sensor."""

import json
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from dagster import (
    DagsterInstance,
    RunRequest,
    build_schedule_context,
    build_sensor_context,
)

from ffe_dagster.config.settings import Settings
from ffe_dagster.definitions import build_definitions
from ffe_dagster.resources.warehouse import WarehouseResource

EXPECTED_ASSETS = [
    "level_1_long_uptrends",
    "level_2_short_downtrends",
    "level_3_mixed_cycles",
    "level_4_all_regimes",
    "market_regimes",
    "notification_outbox",
    "promoted_parameters",
    "raw_bars",
    "validated_bars",
]


def test_asset_graph_snapshot(tiny_settings: Settings) -> None:
    defs = build_definitions(tiny_settings)
    graph = defs.resolve_asset_graph()
    keys = sorted(k.to_user_string() for k in graph.get_all_asset_keys())
    assert keys == EXPECTED_ASSETS
    for job in ("ingest_job", "regimes_job", "optimization_job", "rollback_job"):
        defs.resolve_job_def(job)
    # Many Optuna workers on one level's study: one process per worker on this machine.
    workers = defs.resolve_job_def("study_workers_job")
    assert workers.executor_def.name == "multiprocess"
    assert workers.description and "materialize the level asset" in workers.description
    assert {n.name for n in workers.nodes} == {
        "plan_level_study",
        "run_study_worker",
        "summarize_study_workers",
    }
    # the curriculum is a chain: each level depends on the one before it
    deps = {
        k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys}
        for k in graph.get_all_asset_keys()
    }
    assert "level_1_long_uptrends" in deps["level_2_short_downtrends"]
    assert "level_3_mixed_cycles" in deps["level_4_all_regimes"]
    assert "level_4_all_regimes" in deps["promoted_parameters"]
    assert all(graph.get(k).description for k in graph.get_all_asset_keys())


def test_levels_and_the_export_carry_a_freshness_policy_of_one_cycle_plus_grace(
    tiny_settings: Settings,
) -> None:
    defs = build_definitions(tiny_settings)
    graph = defs.resolve_asset_graph()
    windows: dict[str, timedelta] = {}
    for key in graph.get_all_asset_keys():
        window = getattr(graph.get(key).freshness_policy, "fail_window", None)
        if window is not None:
            windows[key.to_user_string()] = window.to_timedelta()
    assert set(windows) == {k for k in EXPECTED_ASSETS if k.startswith("level_")} | {
        "promoted_parameters"
    }
    # the default cycle is every 6 hours: stale after 7 hours
    assert set(windows.values()) == {timedelta(hours=7)}


def test_schedule_requests_the_newest_partition_of_every_instrument_in_one_run(
    tiny_settings: Settings,
) -> None:
    defs = build_definitions(tiny_settings)
    schedule = defs.resolve_schedule_def("cycle_schedule")
    repo = defs.get_repository_def()
    assert schedule.cron_schedule == "0 */6 * * *"
    with DagsterInstance.ephemeral() as instance:
        context = build_schedule_context(
            instance=instance,
            scheduled_execution_time=datetime(2024, 3, 5, 6, tzinfo=UTC),
            repository_def=repo,
        )
        requests = list(schedule.evaluate_tick(context).run_requests or [])
    (request,) = requests
    partitions = defs.resolve_job_def("ingest_job").partitions_def
    assert partitions is not None and request.partition_key_range is not None
    # The bundled history is closed and monthly: March 2024 has not ended on the 5th, so the
    # newest partition that exists is February's, of every instrument.
    assert sorted(partitions.get_partition_keys_in_range(request.partition_key_range)) == [
        "2024-02-01|BTC_USDT",
        "2024-02-01|ETH_USDT",
        "2024-02-01|EUR_USD",
    ]
    assert request.tags["ffe/trigger"] == "schedule"
    with DagsterInstance.ephemeral() as instance:
        early = build_schedule_context(
            instance=instance,
            scheduled_execution_time=datetime(2019, 6, 1, tzinfo=UTC),
            repository_def=repo,
        )
        result = schedule.evaluate_tick(early)
    assert not result.run_requests and result.skip_message


def _regimes(labels: list[str], confidence: float) -> pl.DataFrame:
    n = len(labels)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    return pl.DataFrame(
        {
            "ts": [start + timedelta(hours=i) for i in range(n)],
            "regime": labels,
            "momentum_pct_per_day": [0.0] * n,
            "volatility_pct": [1.0] * n,
            "trend_efficiency": [0.5] * n,
            "volume_ratio": [1.0] * n,
            "confidence_pct": [confidence] * n,
            "volatility_level": ["NORMAL"] * n,
        }
    )


@pytest.mark.parametrize(
    ("cursor", "labels", "confidence", "launches"),
    [
        (None, ["BULL"] * 72, 90.0, False),  # first sight: records the baseline only
        ({"BTC_USDT": "BULL"}, ["BULL"] * 72, 90.0, False),  # unchanged
        ({"BTC_USDT": "BULL"}, ["BEAR"] * 72, 90.0, True),  # persistent, confident change
        ({"BTC_USDT": "BULL"}, ["BEAR"] * 72, 20.0, False),  # change with low confidence
        ({"BTC_USDT": "BULL"}, ["BULL"] * 66 + ["BEAR"] * 6, 90.0, False),  # whipsaw
    ],
)
def test_regime_sensor_across_cursor_states(
    tiny_settings: Settings,
    cursor: dict[str, str] | None,
    labels: list[str],
    confidence: float,
    launches: bool,
) -> None:
    warehouse = WarehouseResource(path=str(tiny_settings.warehouse_path))
    warehouse.replace_regimes("BTC_USDT", _regimes(labels, confidence))
    defs = build_definitions(tiny_settings)
    sensor = defs.resolve_sensor_def("regime_change_sensor")
    with DagsterInstance.ephemeral() as instance:
        context = build_sensor_context(
            instance=instance,
            cursor=json.dumps(cursor) if cursor else None,
            resources={"warehouse": warehouse},
            repository_def=defs.get_repository_def(),
        )
        result = sensor.evaluate_tick(context)
    requests = result.run_requests or []
    assert bool(requests) is launches
    if launches:
        assert isinstance(requests[0], RunRequest)
        assert requests[0].tags["ffe/trigger"] == "sensor"
        assert requests[0].tags["ffe/regimes"] == "BEAR"
        # Only the level that promotes BEAR is re-optimized, then the promotion runs.
        assert [k.to_user_string() for k in requests[0].asset_selection or []] == [
            "level_2_short_downtrends",
            "promoted_parameters",
        ]
        assert json.loads(result.cursor or "{}")["BTC_USDT"] == "BEAR"
    else:
        assert result.skip_message
