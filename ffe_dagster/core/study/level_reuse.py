"""When a level's stored result, or its study side, can stand for a new run of the level.

A level's result has two sides. Its **study side** (the study's trials, the choice on validation,
the progression, the look-ahead check, the vectorbt re-run of the chosen set with its trades and
equity curve, importance, and level 4's deflated Sharpe, PBO and walk-forward) reads only the
study's train/validation bars, which the study's name carries (``identity.study_identity``).
Its **test side** (the test metrics, stress periods, cost sensitivity and the pass criteria)
reads the test era too, which every new bar before the hold-out lengthens.

``study_key`` hashes every input of the study side; ``reuse_key`` adds every bar and regime label
(the test side's inputs). A stored result whose ``reuse_key`` matches stands for the whole level
(``reusable``); one whose ``study_key`` matches keeps its study side and has its test side
computed again on the new bars (``retestable``; ``levels.retest_level``). Both also check that the
study still holds exactly the trials the result was computed from (a study worker may have added
some).
"""

import hashlib
import json
from dataclasses import asdict
from typing import TypeGuard

from ffe_dagster.core.study.evaluation import Params
from ffe_dagster.core.study.level_result import LevelResult
from ffe_dagster.core.study.level_specs import CurriculumSpec, LevelSpec

REUSE_KEY = "reuse_key"  # the key's field in a stored result row (``LevelResult.reuse_key``)
STUDY_KEY = "study_key"  # and the study side's (``LevelResult.study_key``)


def study_key(
    spec: LevelSpec,
    curriculum: CurriculumSpec,
    *,
    study_name: str,
    n_trials: int,
    walk_forward_trials: int,
    warm_start: Params | None,
    chain_trials: int,
    code_version: str,
) -> str:
    """A hash of every input of a level's study side besides its study's trials.

    ``study_name`` carries the study's identity (the bars of the level's train/validation
    segments, which are all the study side reads, the search space, seed, costs, split, eras,
    hold-out length, strategy, signal file, engine version); the rest are what the level adds:
    the whole level and curriculum specs (pass criteria, progression, robustness settings,
    stress periods), the trial target, the walk-forward trial count, the warm start (the previous
    level's choice), the trials of the warm-start chain (the deflated Sharpe's N) and the code
    version (a code change may change any step, so it never reuses a result of other code).
    """
    payload = {
        "study_name": study_name,
        "n_trials": n_trials,
        "walk_forward_trials": walk_forward_trials,
        "warm_start": dict(sorted((warm_start or {}).items())),
        "chain_trials": chain_trials,
        "code_version": code_version,
        "level": asdict(spec),
        "curriculum": asdict(curriculum),
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def reuse_key(
    spec: LevelSpec,
    curriculum: CurriculumSpec,
    *,
    study_name: str,
    data: str,
    n_trials: int,
    walk_forward_trials: int,
    warm_start: Params | None,
    chain_trials: int,
    code_version: str,
) -> str:
    """A hash of every input of a level's whole result besides its study's trials: the
    ``study_key`` of the same arguments, and ``data``, ``identity.level_data_fingerprint`` of
    every bar and regime label (the level's test, stress periods and cost sensitivity read bars
    no trial does)."""
    side = study_key(
        spec,
        curriculum,
        study_name=study_name,
        n_trials=n_trials,
        walk_forward_trials=walk_forward_trials,
        warm_start=warm_start,
        chain_trials=chain_trials,
        code_version=code_version,
    )
    text = json.dumps({"study_key": side, "data": data}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _logged_with_trials(
    stored: LevelResult | None, complete_trials: int | None
) -> TypeGuard[LevelResult]:
    # A stored, logged (has its MLflow run), not skipped result of a study that still holds
    # the trials it was computed from.
    return (
        stored is not None
        and not stored.skipped
        and complete_trials is not None
        and stored.n_trials == complete_trials
        and stored.mlflow_run_id is not None
    )


def reusable(stored: LevelResult | None, key: str, complete_trials: int | None) -> bool:
    """True when ``stored`` (the level's latest result) was computed under ``key`` from a study
    that still holds ``complete_trials`` complete trials, and was logged (has its MLflow run)."""
    return _logged_with_trials(stored, complete_trials) and stored.reuse_key == key


def retestable(stored: LevelResult | None, key: str, complete_trials: int | None) -> bool:
    """True when ``stored``'s study side was computed under ``key`` (a ``study_key``) from a
    study that still holds ``complete_trials`` complete trials, and was logged: its test side
    may then be computed again on new bars (``levels.retest_level``) instead of the whole level.
    """
    return _logged_with_trials(stored, complete_trials) and stored.study_key == key
