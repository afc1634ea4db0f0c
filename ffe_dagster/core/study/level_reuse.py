"""When a level's stored result can stand for a new run of the level.

A level's result is a function of its study's trials and of everything the level does with them
(choice on validation, test, robustness, pass criteria, progression). When none of that changed
since the stored result, running the level again would recompute the same result: the level
reuses it instead. ``reuse_key`` hashes those inputs; ``reusable`` also checks that the study
still holds exactly the trials the result was computed from (a study worker may have added some).
"""

import hashlib
import json
from dataclasses import asdict

from ffe_dagster.core.study.evaluation import Params
from ffe_dagster.core.study.level_result import LevelResult
from ffe_dagster.core.study.level_specs import CurriculumSpec, LevelSpec

REUSE_KEY = "reuse_key"  # the key's field in a stored result row (``LevelResult.reuse_key``)


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
    """A hash of every input of a level's result besides its study's trials.

    ``study_name`` carries the study's identity (the bars its trials read, space, seed, costs,
    ...); ``data`` is ``identity.level_data_fingerprint`` of every bar and regime label, since the
    level's test, stress periods and robustness read bars no trial does; the rest are what the
    level adds: the whole level and curriculum specs (pass criteria, progression,
    robustness settings, stress periods), the trial target, the warm start (the previous level's
    choice), the trials of the warm-start chain, and the code version (a code change may change
    any step, so it never reuses a result of other code).
    """
    payload = {
        "study_name": study_name,
        "data": data,
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


def reusable(stored: LevelResult | None, key: str, complete_trials: int | None) -> bool:
    """True when ``stored`` (the level's latest result) was computed under ``key`` from a study
    that still holds ``complete_trials`` complete trials, and was logged (has its MLflow run)."""
    if stored is None or stored.skipped or complete_trials is None:
        return False
    return (
        stored.reuse_key == key
        and stored.n_trials == complete_trials
        and stored.mlflow_run_id is not None
    )
