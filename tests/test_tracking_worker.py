"""The tracking worker (``resources/tracking_worker.py``) against a real local MLflow store: a
deferred level run logs exactly what an in-process one does, the registry calls answer from the
worker, a failure of deferred logging is raised (never lost) and leaves the run FAILED, and a
worker that dies fails every call waiting on it instead of hanging."""

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import build_init_resource_context
from mlflow.tracking import MlflowClient

from ffe_dagster.core.reporting.plots import StudyPlotData
from ffe_dagster.resources.tracking import MlflowTrackingResource, RunNotLoggedError
from ffe_dagster.resources.tracking_cycles import CycleRef
from ffe_dagster.resources.tracking_worker import TrackingWorkerError
from tests.test_tracking import equity, study


def _resource(root: Path, *, use_worker: bool) -> MlflowTrackingResource:
    return MlflowTrackingResource(
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        artifact_dir=str(root / "artifacts"),
        experiment="ffe_worker_test",
        use_worker=use_worker,
    )


@pytest.fixture
def in_run(tmp_path: Path) -> Iterator[MlflowTrackingResource]:
    """The resource as a Dagster run has it: set up (worker started), torn down after."""
    tracking = _resource(tmp_path, use_worker=True)
    context = build_init_resource_context()
    tracking.setup_for_execution(context)
    tracking.start_worker()
    try:
        yield tracking
    finally:
        tracking.teardown_after_execution(context)


def _log(tracking: MlflowTrackingResource, name: str, *, wait: bool, **changes: object) -> str:
    trials = study(1)
    fields: dict[str, object] = {
        "run_name": name,
        "tags": {"level": "1", "direction": "long"},
        "params": {"n_trials": 12, "best_stop_loss_pct": 2.5},
        "metrics": {"test_sharpe": 1.1, "test_win_rate_pct": 52.0},
        "trials": trials,
        "json_artifacts": {"best_params.json": {"stop_loss_pct": 2.5}},
        "tables": {"chosen_equity": equity()},
        "plots": StudyPlotData(trials=trials, importance={"stop_loss_pct": 1.0}, equity=equity()),
        "data_fingerprint": "fp1",
        "cycle": CycleRef("cycle-1", "manual", "dagster-run-1"),
        **changes,
    }
    return tracking.log_study(wait=wait, **fields)  # pyright: ignore[reportArgumentType]


def _files(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    out: set[str] = set()
    for item in client.list_artifacts(run_id, path or None):
        out |= _files(client, run_id, item.path) if item.is_dir else {item.path}
    return out


def test_a_deferred_run_logs_what_an_in_process_run_logs(in_run: MlflowTrackingResource) -> None:
    worker = in_run.worker()
    assert worker is not None and worker.pid != os.getpid()
    deferred = _log(in_run, "deferred", wait=False)
    in_run.wait_for_logging()
    # The same call without a worker, into the same store, for comparison.
    here = _log(_resource(Path(in_run.artifact_dir).parent, use_worker=False), "here", wait=True)
    client = MlflowClient(tracking_uri=in_run.tracking_uri)
    a, b = client.get_run(deferred), client.get_run(here)
    assert a.info.status == b.info.status == "FINISHED"
    assert a.data.params == b.data.params
    assert a.data.metrics == b.data.metrics
    ignored = {"mlflow.runName"}
    assert {k for k in a.data.tags if k not in ignored} == {
        k for k in b.data.tags if k not in ignored
    }
    assert a.data.tags["mlflow.parentRunId"] == b.data.tags["mlflow.parentRunId"]  # one cycle
    files = _files(client, deferred)
    assert files == _files(client, here)
    assert {"trials.csv", "chosen_equity.csv", "plots/equity_drawdown.png"} <= files
    in_run.require_finished([deferred, here])
    # The registry's calls run in the worker and answer as in-process ones do.
    version = in_run.register_promotion(
        regime="BULL",
        params={"stop_loss_pct": 2.5},
        metrics={"sharpe": 1.1},
        source_run_id=deferred,
        description="test",
    )
    assert in_run.current_model_version("BULL") == version
    assert in_run.promoted_params("BULL") == {"stop_loss_pct": 2.5}


def test_a_failed_deferred_run_is_raised_and_left_failed(in_run: MlflowTrackingResource) -> None:
    good = _log(in_run, "good", wait=False)
    bad = _log(in_run, "bad", wait=False, metrics={"test_sharpe": "not a number"})
    with pytest.raises(ValueError, match="not a number") as caught:
        in_run.wait_for_logging()
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert f"MLflow logging failed for: run {bad} (bad)" in notes
    assert "raised in the MLflow tracking worker" in notes and "Traceback" in notes
    in_run.wait_for_logging()  # reported once: nothing else failed
    with pytest.raises(RunNotLoggedError, match=f"{bad} FAILED") as unfinished:
        in_run.require_finished([good, bad])
    assert good not in str(unfinished.value)


def test_a_worker_that_dies_fails_its_calls_instead_of_hanging(
    in_run: MlflowTrackingResource,
) -> None:
    worker = in_run.worker()
    assert worker is not None
    worker.ready()
    os.kill(worker.pid, signal.SIGKILL)
    began = time.monotonic()
    assert worker.join(timeout=30) == -signal.SIGKILL
    with pytest.raises(TrackingWorkerError, match="is not running"):
        in_run.current_model_version("BULL")
    assert time.monotonic() - began < 30


def test_a_worker_ends_when_the_run_tears_it_down(tmp_path: Path) -> None:
    tracking = _resource(tmp_path, use_worker=True)
    tracking.start_worker()
    assert tracking.worker() is None  # outside a Dagster run every call stays in this process
    context = build_init_resource_context()
    tracking.setup_for_execution(context)
    assert tracking.worker() is None  # started by a level about to run a study
    tracking.start_worker()
    worker = tracking.worker()
    assert worker is not None
    _log(tracking, "last", wait=False)
    tracking.teardown_after_execution(context)  # waits for the deferred run first
    assert tracking.worker() is None
    assert worker.join(timeout=60) == 0
    runs = MlflowClient(tracking_uri=tracking.tracking_uri).search_runs(
        [tracking.experiment_id(tracking.client())], "attributes.run_name = 'last'"
    )
    assert [r.info.status for r in runs] == ["FINISHED"]
