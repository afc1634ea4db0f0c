"""The curriculum's selection rule (``selection: best | plateau``): parsed and checked with the
curriculum, and used where a level picks its validation candidate (``choose_candidates``).
Hand-built validation numbers: a lone spike and a broad plateau."""

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from ffe_dagster.config import ConfigError, load_curriculum
from ffe_dagster.config.settings import PROJECT_DIR
from ffe_dagster.core.backtest.metrics import Metrics
from ffe_dagster.core.study.evaluation import Params
from ffe_dagster.core.study.identity import study_identity
from ffe_dagster.core.study.level_specs import CurriculumSpec, ParamRange
from ffe_dagster.core.study.levels import choose_candidates
from ffe_dagster.core.study.optimize import StudyOutcome, TrialRecord

CURRICULUM = PROJECT_DIR / "ffe_dagster" / "config" / "curriculum.yaml"
SPIKE = {"x": 5.0, "n": 50}  # validation Sharpe 2.0, every neighbour 0.0
PLATEAU = {"x": 2.0, "n": 20}  # validation Sharpe 1.5, every neighbour 1.4


def _metrics(sharpe: float) -> Metrics:
    # Feasible on validation: 30 trades, 1 % drawdown, 50 % win rate.
    return Metrics(sharpe, 0.0, 1.0, 50.0, 1.5, 1.0, 30, 5.0, 10.0)


def _validate(calls: list[list[Params]]) -> Callable[[Sequence[Params]], list[Metrics]]:
    def validate(batch: Sequence[Params]) -> list[Metrics]:
        calls.append(list(batch))
        out = []
        for p in batch:
            if dict(p) == SPIKE:
                out.append(_metrics(2.0))
            elif dict(p) == PLATEAU:
                out.append(_metrics(1.5))
            elif float(p["x"]) < 3.0 and float(p["n"]) < 30:
                out.append(_metrics(1.4))  # near the plateau
            else:
                out.append(_metrics(0.0))  # near the spike
        return out

    return validate


def _spec(selection: str) -> CurriculumSpec:
    spec = load_curriculum(CURRICULUM)
    space = (ParamRange("x", 0.0, 10.0), ParamRange("n", 0.0, 100.0, step=1.0))
    return replace(spec, parameters=space, selection=selection)


def _outcome() -> StudyOutcome:
    trials = (
        TrialRecord(0, SPIKE, {"sharpe": 3.0}, True),
        TrialRecord(1, PLATEAU, {"sharpe": 2.5}, True),
    )
    return StudyOutcome("s", trials, (0, 1), resumed_trials=0, new_trials=2)


def test_best_takes_the_spike_plateau_takes_the_set_whose_neighbours_hold() -> None:
    best_calls: list[list[Params]] = []
    best = choose_candidates(_validate(best_calls), _outcome(), _spec("best"))
    assert [c.number for c in best] == [0, 1]
    assert len(best_calls) == 1  # only the candidates themselves

    calls: list[list[Params]] = []
    plateau = choose_candidates(_validate(calls), _outcome(), _spec("plateau"))
    assert [c.number for c in plateau] == [1, 0]
    # candidates first, then all 8 neighbours (x and n, down and up, 5 % of each range) at once
    assert [len(c) for c in calls] == [2, 8]
    assert {"x": 2.5, "n": 20} in calls[1] and {"x": 5.0, "n": 45} in calls[1]
    # what plateau chose still carries its own validation numbers, not its neighbours' mean
    assert plateau[0].validation["sharpe"] == 1.5


def test_the_shipped_curriculum_selects_best_by_default() -> None:
    spec = load_curriculum(CURRICULUM)
    assert (spec.selection, spec.plateau_fraction) == ("best", 0.05)


def _write(tmp_path: Path, **changes: object) -> Path:
    raw = yaml.safe_load(CURRICULUM.read_text())
    raw.update(changes)
    path = tmp_path / "curriculum.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_plateau_parses_and_bad_values_are_refused(tmp_path: Path) -> None:
    spec = load_curriculum(_write(tmp_path, selection="plateau", plateau_fraction=0.1))
    assert (spec.selection, spec.plateau_fraction) == ("plateau", 0.1)
    with pytest.raises(ConfigError, match=r"selection must be one of \['best', 'plateau'\], got"):
        load_curriculum(_write(tmp_path, selection="median"))
    with pytest.raises(ConfigError, match=r"plateau_fraction must be in \(0, 1\), got 0"):
        load_curriculum(_write(tmp_path, plateau_fraction=0.0))
    with pytest.raises(ConfigError, match="plateau_fraction"):
        load_curriculum(_write(tmp_path, plateau_fraction="wide"))


def test_an_unknown_rule_on_a_hand_built_spec_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown selection rule 'median'"):
        choose_candidates(_validate([]), _outcome(), _spec("median"))


def test_the_rule_is_not_part_of_a_study_identity() -> None:
    spec = load_curriculum(CURRICULUM)
    level = spec.levels[0]

    def identity(selection: str) -> str:
        chosen = replace(spec, selection=selection)
        return study_identity(level, chosen, segments="s", signal_file_sha256=None)

    assert identity("best") == identity("plateau")
    # while an input of the trials does change it (the check can fail)
    seeded = replace(spec, seed=spec.seed + 1)
    assert identity("best") != study_identity(level, seeded, segments="s", signal_file_sha256=None)
