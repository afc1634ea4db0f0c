"""``study_workers_job``: two worker processes (Dagster's multiprocess executor) fill one level's
study in the local journal storage, then the level asset resumes that study and chooses.

The warehouse is seeded with the real bundled BTC/USDT hourly bars and the regimes detected on
them (skipping the partitioned ingest, which takes minutes); the universe holds only BTC/USDT so
the level's segments, and the test, stay small."""

import multiprocessing.forkserver
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import optuna
import polars as pl
import pytest
import yaml
from dagster import (
    DagsterInstance,
    JobDefinition,
    JobExecutionResult,
    execute_job,
    materialize,
    reconstructable,
)
from optuna.trial import TrialState

from ffe_dagster.assets.curriculum import build_level_asset
from ffe_dagster.config import load_curriculum, load_universe
from ffe_dagster.config.settings import PACKAGE_DIR, Settings
from ffe_dagster.core.regimes.detection import RegimeConfig, detect_regimes
from ffe_dagster.definitions import build_definitions
from ffe_dagster.jobs.study_workers import JOB_NAME, split_trials
from ffe_dagster.resources.optuna_storage import open_storage
from ffe_dagster.resources.studies import OptunaStorageResource
from ffe_dagster.resources.tracking import MlflowTrackingResource
from ffe_dagster.resources.warehouse import WarehouseResource
from tests.level_rows import level_row

LEVEL = 1
TRIALS = 12  # the level's quick trial count in this test's curriculum
PRELOAD = "tests.test_study_workers"


def workers_job() -> JobDefinition:
    """The job as the code location registers it, built from the environment in every process:
    the multiprocess executor starts each step in a fresh process that calls this again."""
    return build_definitions(Settings.from_env()).resolve_job_def(JOB_NAME)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """BTC/USDT only, level 1 with TRIALS quick trials and no repeat, stores in ``tmp_path``;
    exported to the environment for the step processes."""
    raw = yaml.safe_load((PACKAGE_DIR / "config" / "curriculum.yaml").read_text())
    for level in raw["levels"]:
        level["trials"]["quick"] = TRIALS
    # One try: a repeat would add trials on top of the pre-filled ones and blur the check.
    raw["progression"]["max_tries"] = 1
    (tmp_path / "curriculum.yaml").write_text(yaml.safe_dump(raw))
    universe = yaml.safe_load((PACKAGE_DIR / "config" / "universe.yaml").read_text())
    universe["instruments"] = [i for i in universe["instruments"] if i["key"] == "BTC_USDT"]
    (tmp_path / "universe.yaml").write_text(yaml.safe_dump(universe))
    env = {
        "FFE_VAR_DIR": str(tmp_path / "var"),
        "FFE_CURRICULUM": str(tmp_path / "curriculum.yaml"),
        "FFE_UNIVERSE": str(tmp_path / "universe.yaml"),
        "FFE_TRIAL_PROFILE": "quick",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("FFE_STUDIES_URL", "FFE_WAREHOUSE", "FFE_REGISTRY_URL"):
        monkeypatch.delenv(key, raising=False)
    settings = Settings.from_env()
    bars = pl.read_parquet(PACKAGE_DIR / "data" / "samples" / "BTC_USDT_1h.parquet").select(
        "ts", "open", "high", "low", "close", "volume"
    )
    warehouse = WarehouseResource(path=str(settings.warehouse_path))
    warehouse.replace_window(
        "validated_bars",
        "BTC_USDT",
        datetime(2000, 1, 1, tzinfo=UTC),
        datetime(2100, 1, 1, tzinfo=UTC),
        bars,
    )
    warehouse.replace_regimes("BTC_USDT", detect_regimes(bars, RegimeConfig()))
    yield settings


def run_workers_job(
    instance: DagsterInstance,
    config: dict[str, object],
    job_fn: Callable[[], JobDefinition] = workers_job,
) -> JobExecutionResult:
    """Run the job through the multiprocess executor: each step in its own process.

    ``job_fn`` is the module-level function the steps call to rebuild the job. Dagster caches
    the job a function pointer loaded, so a test with other environment variables passes its own.
    """
    # The forkserver outlives a test, and its children inherit the environment it started with
    # (another test's FFE_* variables): stop it so this run's steps see this test's environment.
    multiprocessing.forkserver._forkserver._stop()  # pyright: ignore[reportAttributeAccessIssue]
    return execute_job(
        reconstructable(job_fn),
        instance=instance,
        run_config={
            "ops": {"plan_level_study": {"config": config}},
            # A forkserver that imports the project once, then forks a process per step: the
            # same executor as the default spawn, without paying the imports four times.
            "execution": {
                "config": {
                    "max_concurrent": 2,
                    "start_method": {"forkserver": {"preload_modules": [PRELOAD]}},
                }
            },
        },
        raise_on_error=False,
    )


def test_split_trials() -> None:
    assert split_trials(7, 2) == [4, 3]
    assert split_trials(0, 3) == [0, 0, 0]
    assert split_trials(-2, 2) == [0, 0]


def test_two_worker_processes_fill_the_study_the_level_asset_then_resumes(
    settings: Settings, tmp_path: Path
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with DagsterInstance.local_temp(tempdir=str(home)) as instance:
        result = run_workers_job(instance, {"level": LEVEL, "workers": 2})
        assert result.success
        run_id = result.run_id
        # Each step ran in its own process (the multiprocess executor), the workers in two.
        starts = [
            e
            for e in instance.all_logs(run_id)
            if e.dagster_event is not None and e.dagster_event.event_type_value == "STEP_START"
        ]
        worker_pids = {
            e.dagster_event.pid  # type: ignore[union-attr]
            for e in starts
            if str(e.step_key).startswith("run_study_worker")
        }
        assert len(starts) == 4 and len(worker_pids) == 2
        with result:
            reports = result.output_for_node("run_study_worker")
            summary = result.output_for_node("summarize_study_workers")

    study_name = str(summary["study_name"])
    assert study_name.startswith("level_1_long_uptrends-")
    assert summary["trials"] == TRIALS
    assert sorted(reports) == ["worker_1", "worker_2"]
    numbers = [set(reports[k].numbers) for k in ("worker_1", "worker_2")]
    assert [reports[k].seed for k in ("worker_1", "worker_2")] == [43, 44]
    assert [len(n) for n in numbers] == [TRIALS // 2, TRIALS // 2]  # both contributed
    assert not numbers[0] & numbers[1]

    storage = open_storage(settings.studies_url)
    study = optuna.load_study(study_name=study_name, storage=storage)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states.count(TrialState.COMPLETE) == TRIALS
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    complete = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    assert complete == numbers[0] | numbers[1]

    # The level asset resumes the same study: all its trials are there, it adds none and chooses.
    curriculum = load_curriculum(settings.curriculum_path)
    spec = curriculum.levels[0]
    asset = build_level_asset(
        spec, None, curriculum, load_universe(settings.universe_path), "quick"
    )
    materialized = materialize(
        [asset],
        resources={
            "warehouse": WarehouseResource(path=str(settings.warehouse_path)),
            "optuna_storage": OptunaStorageResource(url=settings.studies_url),
            "mlflow_tracking": MlflowTrackingResource(
                tracking_uri=settings.mlflow_tracking_uri,
                artifact_dir=str(settings.mlflow_artifact_dir),
                experiment=settings.mlflow_experiment,
            ),
        },
    )
    assert materialized.success
    level_result = WarehouseResource(path=str(settings.warehouse_path)).latest_level_result(LEVEL)
    assert level_result is not None
    assert level_result.study_name == study_name
    assert level_result.n_trials == TRIALS and level_result.new_trials == 0
    assert level_result.tries[0].completed_trials == TRIALS
    assert level_result.chosen is not None or level_result.candidates == ()
    (event,) = materialized.asset_materializations_for_node(spec.asset)
    assert event.metadata["new_trials"].value == 0


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"level": LEVEL, "workers": 1}, "workers must be at least 2"),
        ({"level": 9, "workers": 2}, "unknown curriculum level 9"),
    ],
)
def test_bad_requests_fail_with_a_clear_error(
    settings: Settings, config: dict[str, object], message: str
) -> None:
    result = workers_job().execute_in_process(
        run_config={"ops": {"plan_level_study": {"config": config}}}, raise_on_error=False
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert message in str(failure.step_failure_data.error)  # type: ignore[union-attr]


def test_a_skipped_level_is_refused(settings: Settings) -> None:
    previous = {"level": LEVEL, "progression": {"decision": "skip_next", "reasons": ["strong"]}}
    WarehouseResource(path=str(settings.warehouse_path)).save_level_result(
        LEVEL, "level_1_long_uptrends", "run", level_row(previous)
    )
    result = workers_job().execute_in_process(
        run_config={"ops": {"plan_level_study": {"config": {"level": LEVEL + 1}}}},
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "level 2 is skipped" in str(failure.step_failure_data.error)  # type: ignore[union-attr]
