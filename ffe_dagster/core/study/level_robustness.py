"""Robustness of a level's choice: walk-forward, deflated Sharpe, PBO, costs, importance.

Run for the levels marked ``robustness: true`` (level 4). Every number here is computed on data
and trials the level already has; nothing feeds back into the choice, which was made on validation.
"""

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.storages import BaseStorage

from ffe_dagster.core.backtest.metrics import FloatArray, sharpe_ratio
from ffe_dagster.core.backtest.reference import CostModel, Segment
from ffe_dagster.core.robustness.deflated_sharpe import TimestampPool, deflated_sharpe_from_returns
from ffe_dagster.core.robustness.pbo import BlockSums, pbo_from_block_sums
from ffe_dagster.core.robustness.walk_forward import (
    parameter_sensitivity,
    stitch_returns,
    walk_forward_efficiency,
    walk_forward_windows,
)
from ffe_dagster.core.study.evaluation import LevelEvaluator, Params, Period
from ffe_dagster.core.study.level_specs import Constraints, ParamRange, RobustnessSpec
from ffe_dagster.core.study.optimize import StudyConfig, StudyOutcome, run_study


@dataclass(frozen=True, slots=True)
class StudyContext:
    """Where the walk-forward sub-studies live and how they are constrained."""

    study_name: str
    storage: BaseStorage
    seed: int
    constraints: Constraints
    space: Sequence[ParamRange]
    n_trials: int
    batch_size: int


def overfitting_report(
    evaluator: LevelEvaluator,
    outcome: StudyOutcome,
    chosen: Params,
    spec: RobustnessSpec,
    *,
    trials_tried: int | None = None,
) -> dict[str, Any]:
    """Deflated Sharpe of the chosen trial and PBO over the study's trials (train period).

    Both use the portfolio's per-timestamp returns (``TimestampPool``): simultaneous bars of
    several instruments are one observation, so the DSR's observations are distinct timestamps
    and every Sharpe (the chosen trial's and each trial's, whose variance is the DSR's V) is that
    of the pooled series. The DSR's N is ``trials_tried`` when given (every trial that fed the
    choice, e.g. over the warm-start chain; at least this study's trials), else this study's
    trial count. PBO's CSCV blocks are contiguous runs of timestamps, and its Sharpe over a set
    of blocks is computed from exactly those rows' returns (``BlockSums``): no aggregation can
    change which trial is best in-sample.
    """
    pool = TimestampPool.of(*evaluator.bar_stamps(Period.TRAIN))
    scored = [t for t in outcome.trials if "sharpe" in t.metrics]
    if trials_tried is not None and trials_tried < len(scored):
        raise ValueError(
            f"trials_tried={trials_tried} is fewer than the {len(scored)} trials of this study"
        )
    ppy = pool.periods_per_year
    sharpes = [
        sharpe_ratio(pool.pool(evaluator.returns(t.params, Period.TRAIN)), periods_per_year=ppy)
        for t in scored
    ]
    dsr = deflated_sharpe_from_returns(
        pool.pool(evaluator.returns(chosen, Period.TRAIN)),
        trial_sharpes=sharpes,
        periods_per_year=ppy,
        n_trials=trials_tried,
    )
    report: dict[str, Any] = {
        "deflated_sharpe": float(dsr.dsr),
        "probabilistic_sharpe": float(dsr.psr),
        "train_sharpe": float(dsr.sharpe),
        "expected_max_sharpe": float(dsr.sr_star),
        "dsr_trials": dsr.n_trials,
        "dsr_observations": dsr.n_obs,
        "dsr_bars": int(pool.inverse.size),
        "dsr_periods_per_year": ppy,
    }
    trials = outcome.trials
    if len(trials) > spec.pbo_max_trials:
        picks = np.linspace(0, len(trials) - 1, spec.pbo_max_trials).round().astype(int)
        trials = tuple(trials[i] for i in sorted(set(picks)))
    if len(trials) >= 2:
        blocks = max(2, min(spec.pbo_blocks, (pool.n_obs // 4) * 2))
        sums = BlockSums.side_by_side(
            [
                BlockSums.of(pool.pool(evaluator.returns(t.params, Period.TRAIN)), blocks)
                for t in trials
            ]
        )
        pbo = pbo_from_block_sums(sums)
        report.update(
            pbo=float(pbo.pbo),
            pbo_trials=len(trials),
            pbo_blocks=blocks,
            pbo_combinations=int(pbo.n_combinations),
            pbo_degradation_slope=float(pbo.degradation_slope),
            pbo_prob_oos_loss=float(pbo.prob_oos_loss),
        )
    return report


def cost_sensitivity(
    evaluator: LevelEvaluator, chosen: Params, spec: RobustnessSpec
) -> list[dict[str, float]]:
    """Test-period Sharpe and return of the chosen set under other fees and slippage."""
    base = evaluator.costs
    variants = [
        CostModel(fee_pct=base.fee_pct * multiplier, slippage_pct=slippage)
        for multiplier in spec.fee_multipliers
        for slippage in spec.slippage_pct
    ]
    # One engine call: the same parameters under every cost model, signals computed once.
    results = evaluator.evaluate_many([chosen] * len(variants), Period.TEST, costs=variants)
    return [
        {
            "fee_pct": costs.fee_pct,
            "slippage_pct": costs.slippage_pct,
            "sharpe": m.sharpe,
            "total_return_pct": m.total_return_pct,
            "win_rate_pct": m.win_rate_pct,
        }
        for costs, m in zip(variants, results, strict=True)
    ]


def walk_forward(
    evaluator: LevelEvaluator, spec: RobustnessSpec, context: StudyContext
) -> dict[str, Any]:
    """Rolling walk-forward optimization: a fresh study per window on its train part, the best
    feasible train trial traded on the window's test part; test results are stitched.

    Windows are cut per segment at the same fractions, so every instrument contributes to every
    window in time order.
    """
    per_segment = [
        walk_forward_windows(
            len(s),
            n_windows=spec.walk_forward_windows,
            train_fraction=spec.walk_forward_train_fraction,
        )
        for s in evaluator.segments
    ]
    windows: list[dict[str, Any]] = []
    oos_returns: list[FloatArray] = []
    for k in range(spec.walk_forward_windows):
        pieces: list[Segment] = []
        train_bars = 0
        total_bars = 0
        for segment, wins in zip(evaluator.segments, per_segment, strict=True):
            w = wins[k]
            pieces.append(segment.slice(w.train_start, w.test_end))
            train_bars += w.train_end - w.train_start
            total_bars += w.test_end - w.train_start
        fraction = train_bars / total_bars
        sub = LevelEvaluator(
            pieces, evaluator.strategy, evaluator.direction, evaluator.costs, fraction, 0.0
        )
        study = run_study(
            lambda batch, sub=sub: sub.evaluate_many(batch, Period.TRAIN),
            context.space,
            StudyConfig(
                study_name=f"{context.study_name}-wf{k + 1}",
                storage=context.storage,
                n_trials=context.n_trials,
                seed=context.seed + k + 1,
                constraints=context.constraints,
                batch_size=context.batch_size,
            ),
        )
        ranked = sorted(study.trials, key=lambda t: (not t.feasible, -t.metrics["sharpe"]))
        best = ranked[0]
        test = sub.evaluate(best.params, Period.TEST)
        oos_returns.append(sub.returns(best.params, Period.TEST))
        windows.append(
            {
                "window": k + 1,
                "train_bars": train_bars,
                "test_bars": total_bars - train_bars,
                "in_sample_sharpe": best.metrics["sharpe"],
                "out_of_sample_sharpe": test.sharpe,
                "out_of_sample_return_pct": test.total_return_pct,
                "feasible": best.feasible,
                "params": dict(best.params),
            }
        )
    stitched = stitch_returns(oos_returns)
    ppy = evaluator.layout(Period.ALL).periods_per_year
    return {
        "windows": windows,
        "walk_forward_efficiency": walk_forward_efficiency(
            [w["in_sample_sharpe"] for w in windows],
            [w["out_of_sample_sharpe"] for w in windows],
        ),
        "stitched_oos_sharpe": sharpe_ratio(stitched, periods_per_year=ppy),
        "stitched_oos_return_pct": float((np.prod(1.0 + stitched) - 1.0) * 100.0),
        "stitched_oos_bars": int(stitched.size),
    }


def sharpe_importance(study: optuna.Study) -> dict[str, float]:
    """Each parameter's importance for reaching a high train Sharpe (the study's first
    objective), by Optuna's PED-ANOVA evaluator, normalized to sum to 1.

    PED-ANOVA ranks what it takes to reach the *lowest* target values, so the target is the
    negated Sharpe; Optuna warns about that choice on every call, and here it is deliberate.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*low `target` values", category=UserWarning)
        importances = optuna.importance.get_param_importances(
            study,
            evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
            target=lambda t: -t.values[0],
        )
    return {k: float(v) for k, v in importances.items()}


def importance_report(
    study_name: str, storage: BaseStorage, outcome: StudyOutcome
) -> dict[str, Any]:
    """Optuna's parameter importance for train Sharpe, and each numeric parameter's rank
    correlation with it across trials (sensitivity)."""
    out: dict[str, Any] = {"importance": {}, "sensitivity": {}}
    trials = [t for t in outcome.trials if "sharpe" in t.metrics]
    if len(trials) < 4:
        return out
    study = optuna.load_study(study_name=study_name, storage=storage)
    try:
        out["importance"] = sharpe_importance(study)
    except (RuntimeError, ValueError) as exc:
        # Importance needs variation in both parameters and scores; say why it is missing.
        out["importance_error"] = str(exc)
    numeric: dict[str, list[float]] = {}
    for name in trials[0].params:
        if all(not isinstance(t.params.get(name), str) for t in trials):
            numeric[name] = [float(t.params[name]) for t in trials]
    out["sensitivity"] = parameter_sensitivity(
        numeric, scores=[t.metrics["sharpe"] for t in trials]
    )
    return out


def stability(shift: Mapping[str, float]) -> dict[str, float]:
    """Summary of how far parameters moved from the previous level (0 = identical)."""
    if not shift:
        return {}
    values = list(shift.values())
    return {"max_shift": max(values), "mean_shift": float(np.mean(values))}
