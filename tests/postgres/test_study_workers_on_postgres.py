"""``study_workers_job`` with the Optuna study on PostgreSQL (production mode): two worker
processes of the multiprocess executor fill one level's study, which the level asset resumes.

Data and configuration as in ``tests/test_study_workers.py`` (its ``settings`` fixture)."""

from pathlib import Path

import optuna
import pytest
from dagster import DagsterInstance, JobDefinition
from optuna.trial import TrialState

from ffe_dagster.config.settings import Settings
from ffe_dagster.resources.optuna_storage import open_storage
from tests.test_study_workers import TRIALS, run_workers_job, workers_job
from tests.test_study_workers import settings as settings  # the fixture, used below


def workers_job_on_postgres() -> JobDefinition:
    """The job built from this test's environment (FFE_STUDIES_URL on PostgreSQL)."""
    return workers_job()


def test_two_workers_fill_a_study_on_postgres(
    settings: Settings,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("FFE_STUDIES_URL", postgres_url)  # read again by every step process
    assert Settings.from_env().studies_url == postgres_url
    home = tmp_path / "dagster_home"
    home.mkdir()
    with DagsterInstance.local_temp(tempdir=str(home)) as instance:
        result = run_workers_job(instance, {"level": 1, "workers": 2}, workers_job_on_postgres)
        assert result.success
        with result:
            reports = result.output_for_node("run_study_worker")
            summary = result.output_for_node("summarize_study_workers")
    assert summary["trials"] == TRIALS
    assert [r.new_trials for r in reports.values()] == [TRIALS // 2, TRIALS // 2]
    study = optuna.load_study(
        study_name=str(summary["study_name"]), storage=open_storage(postgres_url)
    )
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states.count(TrialState.COMPLETE) == TRIALS
    assert TrialState.RUNNING not in states
    numbers = [t.number for t in study.get_trials(deepcopy=False)]
    assert len(numbers) == len(set(numbers))  # PostgreSQL numbered every trial once
