"""What a user sees in the MLflow UI, read back from a real store through MLflow's client the way
the UI reads it: the experiment's kind (which page it opens on), one parent run per cycle with the
level runs nested under it (the ``mlflow.parentRunId`` tag the runs table nests by), each study's
datasets with their digests and contexts (the Dataset column), and the convergence step metrics
(the chart view's series by step)."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from mlflow.entities import Run

from ffe_dagster.core.study.convergence import StepValue, best_feasible_so_far, trials_per_second
from ffe_dagster.core.study.datasets import StudyDataset, study_datasets
from ffe_dagster.core.study.level_records import trials_table
from ffe_dagster.core.study.level_specs import bars_to_segment
from ffe_dagster.core.study.optimize import StudyOutcome, TrialRecord
from ffe_dagster.promotion.cycle_report import publish_cycle_report
from ffe_dagster.resources.tracking import MlflowTrackingResource
from ffe_dagster.resources.tracking_cycles import CycleRef, DatasetSource, cycle_parent

SOURCE = DatasetSource("/data/warehouse.duckdb", "validated_bars", "5m")


@dataclass(frozen=True)
class Logged:
    run_id: str
    datasets: tuple[StudyDataset, ...]
    convergence: tuple[StepValue, ...]


def segment_datasets(shift: float) -> tuple[StudyDataset, ...]:
    ts = [datetime(2021, 1, 1) + timedelta(minutes=5 * i) for i in range(200)]
    close = 100 + np.cumsum(np.sin(np.arange(200) / 7)) + shift
    frame = pl.DataFrame(
        {"ts": ts, "open": close, "high": close + 1, "low": close - 1, "close": close}
    )
    segment = bars_to_segment(frame, "BTC_USDT", 105_120)
    return study_datasets([segment], train_fraction=0.6, validation_fraction=0.2)


def trial_records(seed: int) -> tuple[TrialRecord, ...]:
    rng = np.random.default_rng(seed)
    return tuple(
        TrialRecord(
            number=i,
            params={"stop_loss_pct": float(rng.uniform(0.5, 5))},
            metrics={
                "sharpe": float(rng.normal()),
                "win_rate_pct": float(rng.uniform(30, 60)),
                "max_drawdown_pct": float(rng.uniform(1, 20)),
            },
            feasible=i % 3 != 0,
        )
        for i in range(9)
    )


def log_level(
    tracking: MlflowTrackingResource, cycle: CycleRef, level: int, shift: float
) -> Logged:
    records = trial_records(level)
    datasets = segment_datasets(shift)
    convergence = (
        *best_feasible_so_far(records),
        *trials_per_second({r.number: 10.0 + 0.5 * r.number for r in records}, 10.0),
    )
    run_id = tracking.log_study(
        run_name=f"level_{level} {cycle.dagster_run_id}",
        tags={"level": str(level), "dagster_run_id": cycle.dagster_run_id},
        params={"n_trials": len(records)},
        metrics={"test_sharpe": 0.1 * level},
        trials=trials_table(StudyOutcome("s", records, (1,), resumed_trials=0, new_trials=9)),
        json_artifacts={},
        cycle=cycle,
        datasets=datasets,
        dataset_source=SOURCE,
        convergence=convergence,
    )
    return Logged(run_id, datasets, convergence)


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowTrackingResource]:
    root = tmp_path_factory.mktemp("mlflow_ui")
    yield MlflowTrackingResource(
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        artifact_dir=str(root / "artifacts"),
        experiment="ffe_ui",
    )


@pytest.fixture(scope="module")
def logged(tracking: MlflowTrackingResource) -> dict[str, list[Logged]]:
    """Two cycles of two levels each; cycle B's bars differ from cycle A's (new prices)."""
    out: dict[str, list[Logged]] = {}
    for cycle_id, shift in (("cycle-A", 0.0), ("cycle-B", 0.25)):
        # Levels and promotion of one cycle in different Dagster runs, as the chain may run them.
        steps = [CycleRef(cycle_id, "schedule", f"{cycle_id}-run-{i}") for i in range(3)]
        out[cycle_id] = [log_level(tracking, steps[i], i + 1, shift) for i in range(2)]
        publish_cycle_report(tracking, [], {}, steps[2])
    return out


@pytest.fixture(scope="module")
def runs(tracking: MlflowTrackingResource, logged: dict[str, list[Logged]]) -> list[Run]:
    client = tracking.client()
    return list(client.search_runs([tracking.experiment_id(client)]))


def test_the_experiment_opens_on_its_runs(
    tracking: MlflowTrackingResource, logged: dict[str, list[Logged]]
) -> None:
    experiment = tracking.client().get_experiment_by_name("ffe_ui")
    assert experiment is not None
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_an_older_experiment_gets_the_kind(tmp_path: Path) -> None:
    tracking = MlflowTrackingResource(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_dir=str(tmp_path / "artifacts"),
        experiment="old",
    )
    client = tracking.client()
    made = client.create_experiment("old", artifact_location=(tmp_path / "a").as_uri())
    assert "mlflow.experimentKind" not in client.get_experiment(made).tags
    assert tracking.experiment_id(client) == made
    assert client.get_experiment(made).tags["mlflow.experimentKind"] == "custom_model_development"


def test_one_parent_per_cycle_with_its_levels_nested(
    runs: list[Run], logged: dict[str, list[Logged]]
) -> None:
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.data.tags["cycle_id"] for r in parents) == ["cycle-A", "cycle-B"]
    for parent in parents:
        cycle_id = parent.data.tags["cycle_id"]
        children = {
            r.info.run_id
            for r in runs
            if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
        }
        assert children == {x.run_id for x in logged[cycle_id]}
        assert parent.data.tags["ffe.kind"] == "cycle"
        assert parent.data.tags["trigger"] == "schedule"
        assert parent.data.tags["dagster_run_ids"] == ",".join(
            f"{cycle_id}-run-{i}" for i in range(3)
        )
        assert parent.info.status == "FINISHED"  # the cycle report finished it
        # No levels were reported, so the recommendation (the run's description) says so.
        assert parent.data.tags["mlflow.note.content"].startswith("No recommendation")
    assert len(runs) == 6


def test_datasets_name_the_bars_with_digests(
    runs: list[Run], logged: dict[str, list[Logged]]
) -> None:
    by_id = {r.info.run_id: r for r in runs}
    digests: dict[str, dict[str, str]] = {}
    for cycle_id, levels in logged.items():
        for level in levels:
            run_inputs = by_id[level.run_id].inputs
            assert run_inputs is not None
            inputs = run_inputs.dataset_inputs
            seen = {
                {t.key: t.value for t in i.tags}["mlflow.data.context"]: i.dataset for i in inputs
            }
            assert set(seen) == {"train", "validation", "test"}
            for expected in level.datasets:
                dataset = seen[expected.context]
                assert dataset.name == f"BTC_USDT {expected.context}"
                assert dataset.digest == expected.digest
                assert dataset.source_type == "duckdb"
                assert '"table": "validated_bars"' in dataset.source
                assert f'"bars": {expected.bars}' in dataset.source
            digests[cycle_id] = {c: d.digest for c, d in seen.items()}
    # Cycle B's prices moved: every period's digest differs from cycle A's.
    assert all(digests["cycle-A"][c] != digests["cycle-B"][c] for c in digests["cycle-A"])


def test_convergence_is_step_metrics(
    tracking: MlflowTrackingResource, logged: dict[str, list[Logged]]
) -> None:
    client = tracking.client()
    level = logged["cycle-B"][1]
    for name in ("best_feasible_sharpe", "best_feasible_max_drawdown_pct", "trials_per_second"):
        expected = [(p.step, p.value) for p in level.convergence if p.name == name]
        history = client.get_metric_history(level.run_id, f"convergence/{name}")
        assert sorted((m.step, m.value) for m in history) == expected
        assert len(expected) >= 8  # trial 0 is infeasible: best-so-far starts at trial 1
    # The rates were worked by hand: trial n finished at 0.5 * n s, so n + 1 trials in 0.5 n s.
    rates = dict(
        (m.step, m.value)
        for m in client.get_metric_history(level.run_id, "convergence/trials_per_second")
    )
    assert rates[4] == pytest.approx(5 / 2.0)
    assert 0 not in rates
    # The runs table shows the latest step's value: the best feasible Sharpe at the end.
    run = client.get_run(level.run_id)
    best = [p.value for p in level.convergence if p.name == "best_feasible_sharpe"]
    assert run.data.metrics["convergence/best_feasible_sharpe"] == best[-1] == max(best)


def test_the_parent_is_found_again_not_duplicated(tracking: MlflowTrackingResource) -> None:
    client = tracking.client()
    experiment = tracking.experiment_id(client)
    cycle = CycleRef("cycle-C", "manual", "run-1")
    first = cycle_parent(client, experiment, cycle)
    assert cycle_parent(client, experiment, cycle) == first
    # A duplicate made later (a racing step) never wins over the earliest parent.
    client.create_run(
        experiment,
        start_time=client.get_run(first).info.start_time + 1000,
        tags={"ffe.kind": "cycle", "cycle_id": "cycle-C"},
    )
    assert cycle_parent(client, experiment, CycleRef("cycle-C", "manual", "run-2")) == first
    assert client.get_run(first).data.tags["dagster_run_ids"] == "run-1,run-2"
    with pytest.raises(ValueError, match="quote"):
        cycle_parent(client, experiment, CycleRef("it's", "manual", "run-3"))
