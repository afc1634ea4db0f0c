"""The search space and the constraints of a study, in Optuna's terms: the distributions of the
curriculum's parameter ranges, constraint values (<= 0 holds), and a warm start moved into the
space."""

from collections.abc import Mapping, Sequence

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from ffe_dagster.core.backtest.metrics import Metrics
from ffe_dagster.core.study.evaluation import Params, ParamValue
from ffe_dagster.core.study.level_specs import Constraints, ParamRange


def build_distributions(space: Sequence[ParamRange]) -> dict[str, BaseDistribution]:
    """Optuna distributions for the parameter ranges of the curriculum."""
    dists: dict[str, BaseDistribution] = {}
    for p in space:
        if p.choices:
            dists[p.name] = CategoricalDistribution(list(p.choices))
        elif p.step is not None and float(p.step).is_integer() and float(p.low).is_integer():
            dists[p.name] = IntDistribution(int(p.low), int(p.high), step=int(p.step))
        else:
            dists[p.name] = FloatDistribution(p.low, p.high)
    return dists


def constraint_violations(metrics: Metrics, constraints: Constraints) -> dict[str, float]:
    """Constraint values in Optuna's convention: <= 0 is satisfied, > 0 by how much it is not."""
    return {
        "min_trades": float(constraints.min_trades - metrics.n_trades),
        "max_drawdown_pct": metrics.max_drawdown_pct - constraints.max_drawdown_pct,
        "min_win_rate_pct": constraints.min_win_rate_pct - metrics.win_rate_pct,
    }


def is_feasible(metrics: Metrics, constraints: Constraints) -> bool:
    """True when every constraint holds."""
    return all(v <= 0.0 for v in constraint_violations(metrics, constraints).values())


def clip_to_space(params: Params, dists: Mapping[str, BaseDistribution]) -> dict[str, ParamValue]:
    """``params`` moved into ``dists``: numbers clipped to their range (integers rounded),
    categories kept only when they are a choice, names outside the space dropped."""
    out: dict[str, ParamValue] = {}
    for name, dist in dists.items():
        if name not in params:
            continue
        value = params[name]
        if isinstance(dist, CategoricalDistribution):
            if value in dist.choices:
                out[name] = value
        elif isinstance(dist, IntDistribution | FloatDistribution):
            clipped = min(max(float(value), dist.low), dist.high)
            out[name] = round(clipped) if isinstance(dist, IntDistribution) else clipped
    return out
