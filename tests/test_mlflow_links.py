"""``make mlflow``'s links: every experiment of a real tracking store, each opening on its runs
table (``workflowType=machine_learning``), the default experiment left out."""

from pathlib import Path

import pytest

from ffe_dagster.mlflow_links import main, runs_view_url
from ffe_dagster.resources.tracking import MlflowTrackingResource


def test_links_name_each_experiment_with_its_runs_view(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking = MlflowTrackingResource(
        tracking_uri=uri, artifact_dir=str(tmp_path / "artifacts"), experiment="ffe_curriculum"
    )
    experiment_id = tracking.experiment_id(tracking.client())
    assert main(["--tracking-uri", uri, "--url", "http://127.0.0.1:5077/"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:] == [
        f"  ffe_curriculum: http://127.0.0.1:5077/#/experiments/{experiment_id}"
        "?workflowType=machine_learning"
    ]
    assert (
        runs_view_url("http://h:1", "7")
        == "http://h:1/#/experiments/7?workflowType=machine_learning"
    )


def test_an_empty_store_says_to_run_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]) == 0
    assert "no experiment yet" in capsys.readouterr().out
