"""Range checks of a parsed curriculum: every limit out of range is one problem naming its key
path in ``curriculum.yaml`` (``levels[2].trials.quick must be >= 1, got 0``) and the allowed range.
"""

from collections.abc import Mapping
from typing import Any

from ffe_dagster.config.errors import Problems
from ffe_dagster.config.settings import TRIAL_PROFILES
from ffe_dagster.core.backtest.strategies import STRATEGIES
from ffe_dagster.core.study.level_specs import (
    PASS_CRITERIA,
    SELECTION_RULES,
    Constraints,
    CurriculumSpec,
    LevelSpec,
    OptimizerSpec,
    ParamRange,
    ProgressionSpec,
    RobustnessSpec,
    Window,
)

SAMPLERS = ("tpe", "nsga2")  # ffe_dagster.core.study.optimize.make_sampler
STRATEGY_NAMES = (*sorted(STRATEGIES), "file_signals")


def _percent(p: Problems, key: str, value: float, *, open_low: bool = False) -> None:
    p.within(key, value, 0.0, 100.0, open_low=open_low)


def _trials(p: Problems, key: str, trials: Mapping[str, int]) -> None:
    for profile in TRIAL_PROFILES:
        if profile not in trials:
            p.add(
                f"{key}.{profile} is missing (one trial count per profile {list(TRIAL_PROFILES)})"
            )
    for profile, count in trials.items():
        p.at_least(f"{key}.{profile}", count, 1)


def _constraints(p: Problems, c: Constraints) -> None:
    p.at_least("constraints.min_trades", c.min_trades, 0)
    _percent(p, "constraints.max_drawdown_pct", c.max_drawdown_pct, open_low=True)
    _percent(p, "constraints.min_win_rate_pct", c.min_win_rate_pct)


def _parameter(p: Problems, key: str, r: ParamRange) -> None:
    if r.choices:
        if len(set(r.choices)) != len(r.choices):
            p.add(f"{key}.choices must not repeat a value, got {list(r.choices)}")
        return
    if not r.low < r.high:
        p.add(f"{key}: low must be < high (or give a list of choices), got {r.low:g} .. {r.high:g}")
    if r.step is not None:
        p.at_least(f"{key}.step", r.step, 0.0, strict=True)


def _parameters(p: Problems, spec: CurriculumSpec, raw: Mapping[str, Any]) -> None:
    own = (raw.get("strategy_parameters") or {}).get(spec.strategy) or {}
    for r in spec.parameters:
        where = f"strategy_parameters.{spec.strategy}" if r.name in own else "parameters"
        _parameter(p, f"{where}.{r.name}", r)


def _optimizer(p: Problems, o: OptimizerSpec) -> None:
    p.one_of("optimizer.sampler", o.sampler, SAMPLERS)
    p.at_least("optimizer.batch_size", o.batch_size, 1)
    if o.patience is not None:
        p.at_least("optimizer.patience (or null)", o.patience, 1)
    if o.timeout_s is not None:
        p.at_least("optimizer.timeout_s (or null)", o.timeout_s, 0.0, strict=True)


def _progression(p: Problems, g: ProgressionSpec) -> None:
    for name in (
        "advance_min_win_rate_pct",
        "repeat_below_win_rate_pct",
        "skip_min_win_rate_pct",
    ):
        _percent(p, f"progression.{name}", getattr(g, name))
    if g.repeat_below_win_rate_pct > g.advance_min_win_rate_pct:
        p.add(
            "progression.repeat_below_win_rate_pct must be <= advance_min_win_rate_pct, got "
            f"{g.repeat_below_win_rate_pct:g} > {g.advance_min_win_rate_pct:g}"
        )
    p.at_least("progression.max_param_shift", g.max_param_shift, 0.0, strict=True)
    p.at_least("progression.repeat_trial_factor", g.repeat_trial_factor, 1.0)
    p.at_least("progression.max_tries", g.max_tries, 1)


def _robustness(p: Problems, r: RobustnessSpec) -> None:
    p.at_least("robustness.walk_forward_windows", r.walk_forward_windows, 2)
    p.within(
        "robustness.walk_forward_train_fraction",
        r.walk_forward_train_fraction,
        0.0,
        1.0,
        open_low=True,
        open_high=True,
    )
    _trials(p, "robustness.walk_forward_trials", r.walk_forward_trials)
    if r.pbo_blocks < 4 or r.pbo_blocks % 2:
        p.add(f"robustness.pbo_blocks must be an even number >= 4, got {r.pbo_blocks}")
    p.at_least("robustness.pbo_max_trials", r.pbo_max_trials, 2)
    for key in ("fee_multipliers", "slippage_pct"):
        values: tuple[float, ...] = getattr(r, key)
        if not values:
            p.add(f"robustness.{key} must hold at least one value")
        for i, value in enumerate(values):
            p.at_least(f"robustness.{key}[{i}]", value, 0.0)


_PERCENT_CRITERIA = ("min_win_rate_pct", "max_drawdown_pct")


def _level(p: Problems, i: int, lv: LevelSpec) -> None:
    key = f"levels[{i}]"
    _trials(p, f"{key}.trials", lv.trials)
    if not lv.windows:
        p.add(f"{key}.windows must hold at least one window")
    for j, w in enumerate(lv.windows):
        if w.start > w.end:
            p.add(
                f"{key}.windows[{j}]: start must be on or before end, got {w.start:%Y-%m-%d} > "
                f"{w.end:%Y-%m-%d}"
            )
    for name, threshold in lv.pass_criteria.items():
        if name not in PASS_CRITERIA:
            p.add(f"{key}.pass.{name} is not a known criterion; known: {sorted(PASS_CRITERIA)}")
        elif name in _PERCENT_CRITERIA:
            _percent(p, f"{key}.pass.{name}", threshold, open_low=name == "max_drawdown_pct")
        elif name == "max_pbo":
            p.within(f"{key}.pass.max_pbo", threshold, 0.0, 1.0)
    if lv.regime_segments is not None:
        p.at_least(f"{key}.regime_segments.min_days", lv.regime_min_days, 1)


def _span(w: Window) -> str:
    return f"{w.instrument} {w.start:%Y-%m-%d}..{w.end:%Y-%m-%d}"


def _eras(p: Problems, spec: CurriculumSpec) -> None:
    """No bar both steers and tests (docs/eras.md): train/validation windows end before their
    instrument's test era, test windows lie in it."""
    for i, lv in enumerate(spec.levels):
        for j, w in enumerate(lv.windows):
            era = spec.era_start(w.instrument)
            if era is not None and w.end >= era:
                p.add(
                    f"levels[{i}].windows[{j}] ({_span(w)}) reaches into the test era (from "
                    f"{era:%Y-%m-%d}): a train/validation window must end before it, or its bars "
                    "would steer a choice that a level's test period or the hold-out then judges"
                )
        for j, w in enumerate(lv.test_windows):
            era = spec.era_start(w.instrument)
            if era is not None and w.start < era:
                p.add(
                    f"levels[{i}].test_windows[{j}] ({_span(w)}) starts before the test era (from "
                    f"{era:%Y-%m-%d}): those bars train or validate the levels of the warm-start "
                    "chain"
                )
        if not lv.windows:
            continue
        if all(spec.era_start(w.instrument) is None for w in lv.windows):
            p.add(f"levels[{i}]: test_era.start must give every instrument a test era")


def curriculum_problems(spec: CurriculumSpec, raw: Mapping[str, Any]) -> list[str]:
    """Every out-of-range limit of ``spec`` (parsed from ``raw``), as ``key must ..., got ...``."""
    p = Problems()
    p.one_of("strategy", spec.strategy, STRATEGY_NAMES)
    if spec.strategy == "file_signals" and not spec.signal_file:
        p.add("strategy_options.path must name the signal file of strategy file_signals")
    p.at_least("costs.fee_pct", spec.costs.fee_pct, 0.0)
    p.at_least("costs.slippage_pct", spec.costs.slippage_pct, 0.0)
    p.at_least("holdout_days", spec.holdout_days, 0)
    p.at_least("min_segment_bars", spec.min_segment_bars, 2)
    p.at_least("seed", spec.seed, 0)
    p.one_of("selection", spec.selection, SELECTION_RULES)
    if not 0.0 < spec.plateau_fraction < 1.0:
        p.add(f"plateau_fraction must be in (0, 1), got {spec.plateau_fraction:g}")
    _constraints(p, spec.constraints)
    _parameters(p, spec, raw)
    _optimizer(p, spec.optimizer)
    _progression(p, spec.progression)
    _robustness(p, spec.robustness)
    for name, (start, end) in spec.stress_periods.items():
        if start > end:
            p.add(f"stress_periods.{name}: start must be on or before end")
    for i, lv in enumerate(spec.levels):
        _level(p, i, lv)
    _eras(p, spec)
    return p.items
