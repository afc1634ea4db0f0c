"""The curriculum's levels at one replayed cycle, run as the level assets run them.

Per level, in chain order, what ``assets/curriculum.build_level_asset`` does without its
publishing: the previous level's result decides a skip (``skipped_level_result``) or gives the
warm start and the chain's trial count; the study is named by ``study_fingerprint`` and
configured by ``level_study_config``; ``run_level`` computes the outcome and
``outcome_to_dict`` stores it. ``tests/test_replay.py`` checks that the assets, materialized on
the same bars, choose the same parameters.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optuna.storages import BaseStorage

from ffe_dagster.assets.curriculum import study_fingerprint
from ffe_dagster.core.study.eras import LevelData
from ffe_dagster.core.study.level_records import outcome_to_dict
from ffe_dagster.core.study.level_specs import CurriculumSpec
from ffe_dagster.core.study.levels import level_study_config, run_level, skipped_level_result


@dataclass(frozen=True, slots=True)
class ChainResult:
    """Every level's stored result of one cycle, and the train Sharpe of every trial run."""

    results: Mapping[int, Mapping[str, Any]]
    trial_sharpes: tuple[float, ...]


def run_levels(
    curriculum: CurriculumSpec,
    data: LevelData,
    *,
    storage: BaseStorage,
    trial_profile: str,
) -> ChainResult:
    """Run every level of ``curriculum`` on ``data`` in chain order (see the module docstring)."""
    results: dict[int, dict[str, Any]] = {}
    sharpes: list[float] = []
    previous: dict[str, Any] | None = None
    for spec in curriculum.levels:
        if previous is not None and previous["progression"]["decision"] == "skip_next":
            result = skipped_level_result(spec, previous)
        else:
            warm = (previous or {}).get("chosen") or {}
            n_trials = spec.trials[trial_profile]
            name = f"{spec.asset}-{study_fingerprint(spec, curriculum, data)}"
            outcome = run_level(
                spec,
                curriculum,
                data,
                study=level_study_config(curriculum, name, storage, n_trials),
                warm_start=warm.get("params"),
                walk_forward_trials=curriculum.robustness.walk_forward_trials[trial_profile],
                chain_trials=int((previous or {}).get("chain_trials", 0)),
            )
            result = outcome_to_dict(outcome)
            sharpes.extend(float(t.metrics["sharpe"]) for t in outcome.study.trials)
        results[spec.level] = result
        previous = result
    return ChainResult(results=results, trial_sharpes=tuple(sharpes))
