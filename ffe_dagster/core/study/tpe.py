"""Optuna's TPE sampler, splitting the trials once per asked trial instead of once per parameter.

Independent TPE samples each parameter of a trial on its own, and for each one Optuna splits all
trials into "below" and "above" again: a non-domination sort of every trial's three objectives,
done seven times per trial with seven parameters, and the largest cost of a level's study. The
split depends only on the trials, so one split serves every parameter of the trial: the sampler
below draws exactly the numbers Optuna's draws (``tests/core/test_tpe.py`` compares them).

With the constant liar, Optuna also reads the study's trials from storage once per parameter;
on an RDB storage each read loads every RUNNING trial again (a batch of 16), which was 40 % of a
PostgreSQL level's wall time. The trials are read once per asked trial here, which is what
Optuna's own sampler does without the liar (its per-trial cache): in one process nothing changes
between two parameters of a trial, so the draws are the same; with several workers on a study,
a trial another worker tells between two parameters of this one is seen from the next trial on.
"""

from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers._tpe import sampler as optuna_tpe
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

_SplitKey = tuple[int, int, int, tuple[tuple[int, int], ...]]
# the storage object, the study and the trial whose parameters are being drawn
_TrialKey = tuple[int, int, int]


class SplitOnceTPESampler(optuna.samplers.TPESampler):
    """``TPESampler`` whose below/above split is computed once per trial and set of trials."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._split_key: _SplitKey | None = None
        self._split: tuple[list[FrozenTrial], list[FrozenTrial]] = ([], [])
        self._trials_key: _TrialKey | None = None
        self._trials: list[FrozenTrial] = []

    def _split_trials(
        self, study: Study, trial: FrozenTrial, trials: list[FrozenTrial], n_below: int
    ) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
        # The key names every trial and its state: a trial told since the last split (RUNNING to
        # COMPLETE, so it moves between the halves) makes a new key.
        key = (
            study._study_id,
            trial.number,
            n_below,
            tuple((t.number, t.state.value) for t in trials),
        )
        if key != self._split_key:
            self._split = optuna_tpe._split_trials(study, trials, n_below)
            self._split_key = key
        return self._split

    def _liar_trials(
        self, study: Study, trial: FrozenTrial, states: list[TrialState]
    ) -> list[FrozenTrial]:
        key = (id(study._storage), study._study_id, trial._trial_id)
        if key != self._trials_key:
            self._trials = study._get_trials(deepcopy=False, states=states, use_cache=False)
            self._trials_key = key
        return self._trials

    def _sample(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        # Optuna 5.0's TPESampler._sample, line for line, but for the memoized read and split.
        if self._constant_liar:
            states = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING]
            trials = self._liar_trials(study, trial, states)
            trials = [t for t in trials if trial.number != t.number]
        else:
            states = [TrialState.COMPLETE, TrialState.PRUNED]
            trials = study._get_trials(deepcopy=False, states=states, use_cache=True)
        if self._gamma is None:
            if len(study.directions) <= 1:
                self._gamma = optuna_tpe.default_gamma
            else:
                self._gamma = optuna_tpe.default_gamma_multiobjective
        n = sum(t.state != TrialState.RUNNING for t in trials)  # running trials not counted
        below_trials, above_trials = self._split_trials(study, trial, trials, self._gamma(n))
        mpe_below = self._build_parzen_estimator(
            study, search_space, below_trials, handle_below=True
        )
        mpe_above = self._build_parzen_estimator(
            study, search_space, above_trials, handle_below=False
        )
        samples_below = mpe_below.sample(self._rng.rng, self._n_ei_candidates)
        acq_func_vals = self._compute_acquisition_func(samples_below, mpe_below, mpe_above)
        ret = optuna.samplers.TPESampler._compare(samples_below, acq_func_vals)
        for param_name, dist in search_space.items():
            ret[param_name] = dist.to_external_repr(ret[param_name])
        return ret
