"""The curriculum's levels at one replayed cycle, run as the level assets run them.

Per level, in chain order, what ``assets/curriculum.build_level_asset`` does without its
publishing: the previous level's result decides a skip (``skipped_level_result``) or gives the
warm start and the chain's trial count; the study is named by ``study_fingerprint`` and
configured by ``level_study_config``; ``run_level`` computes the outcome and ``outcome_result``
makes it the stored record. ``tests/test_replay.py`` checks that the assets, materialized on the
same bars, choose the same parameters.
"""

from collections.abc import Mapping
from dataclasses import dataclass

from optuna.storages import BaseStorage

from ffe_dagster.assets.curriculum import study_fingerprint
from ffe_dagster.core.study.eras import LevelData
from ffe_dagster.core.study.level_records import outcome_result
from ffe_dagster.core.study.level_result import LevelResult
from ffe_dagster.core.study.level_specs import CurriculumSpec
from ffe_dagster.core.study.levels import level_study_config, run_level, skipped_level_result
from ffe_dagster.core.study.progression import Decision


@dataclass(frozen=True, slots=True)
class ChainResult:
    """Every level's stored result of one cycle, and the train Sharpe of every trial run."""

    results: Mapping[int, LevelResult]
    trial_sharpes: tuple[float, ...]


def run_levels(
    curriculum: CurriculumSpec,
    data: LevelData,
    *,
    storage: BaseStorage,
    trial_profile: str,
) -> ChainResult:
    """Run every level of ``curriculum`` on ``data`` in chain order (see the module docstring)."""
    results: dict[int, LevelResult] = {}
    sharpes: list[float] = []
    previous: LevelResult | None = None
    for spec in curriculum.levels:
        if previous is not None and previous.decision is Decision.SKIP_NEXT:
            result = skipped_level_result(spec, previous)
        else:
            n_trials = spec.trials[trial_profile]
            name = f"{spec.asset}-{study_fingerprint(spec, curriculum, data)}"
            outcome = run_level(
                spec,
                curriculum,
                data,
                study=level_study_config(curriculum, name, storage, n_trials),
                warm_start=previous.chosen_params if previous else None,
                walk_forward_trials=curriculum.robustness.walk_forward_trials[trial_profile],
                chain_trials=previous.chain_trials if previous else 0,
            )
            result = outcome_result(outcome)
            sharpes.extend(float(t.metrics["sharpe"]) for t in outcome.study.trials)
        results[spec.level] = result
        previous = result
    return ChainResult(results=results, trial_sharpes=tuple(sharpes))
