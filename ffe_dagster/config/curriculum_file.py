"""``curriculum.yaml``: parsed into the frozen ``CurriculumSpec`` of
``ffe_dagster.core.study.level_specs``, then range-checked by ``curriculum_checks``
(``load_curriculum`` does both)."""

from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from ffe_dagster.config.curriculum_checks import curriculum_problems
from ffe_dagster.config.errors import ConfigError
from ffe_dagster.config.yaml_files import read_yaml
from ffe_dagster.core.backtest.reference import CostModel, Direction
from ffe_dagster.core.study.level_specs import (
    Constraints,
    CurriculumSpec,
    LevelSpec,
    OptimizerSpec,
    ParamRange,
    ProgressionSpec,
    RobustnessSpec,
    Window,
)


def load_curriculum(path: Path) -> CurriculumSpec:
    """Parse ``curriculum.yaml`` and check its limits; a ``ConfigError`` names the file, and
    every key out of range with the allowed range."""
    raw = read_yaml(path)
    try:
        spec = parse_curriculum(raw)
    except ValueError as exc:
        raise ConfigError(str(path), [str(exc)]) from exc
    problems = curriculum_problems(spec, raw)
    if problems:
        raise ConfigError(str(path), problems)
    return spec


def _day_start(value: date | str) -> datetime:
    # YAML reads 2020-01-01 as a date, "2020-01-01" as a string: accept both.
    day = value if isinstance(value, date) else date.fromisoformat(str(value))
    return datetime.combine(day, time(0), tzinfo=UTC)


def _day_end(value: date | str) -> datetime:
    return _day_start(value) + timedelta(days=1) - timedelta(microseconds=1)


def _test_era(raw: Mapping[str, Any]) -> dict[str, datetime]:
    # test_era: {start: 2022-01-01, instruments: {EUR_USD: 2022-03-01}}
    out = {"*": _day_start(raw["start"])}
    out.update({str(k): _day_start(v) for k, v in (raw.get("instruments") or {}).items()})
    return out


def _number(raw: Mapping[str, Any], key: str, default: float) -> float:
    value = raw.get(key, default)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a number, got {value!r}") from None


def parse_curriculum(raw: Mapping[str, Any]) -> CurriculumSpec:
    """Build a ``CurriculumSpec`` from the parsed YAML, with a clear error on a bad field."""
    try:
        split = raw["split"]
        levels = tuple(
            LevelSpec(
                level=int(lv["level"]),
                asset=str(lv["asset"]),
                name=str(lv["name"]),
                direction=Direction(lv["direction"]),
                windows=tuple(
                    Window(w["instrument"], _day_start(w["start"]), _day_end(w["end"]))
                    for w in lv["windows"]
                ),
                trials={str(k): int(v) for k, v in lv["trials"].items()},
                pass_criteria={str(k): float(v) for k, v in lv["pass"].items()},
                promotes=tuple(str(r) for r in lv.get("promotes", [])),
                regime_segments=(lv.get("regime_segments") or {}).get("regime"),
                regime_min_days=int((lv.get("regime_segments") or {}).get("min_days", 14)),
                robustness=bool(lv.get("robustness", False)),
                promote_without_pass=bool(lv.get("promote_without_pass", False)),
                test_windows=tuple(
                    Window(w["instrument"], _day_start(w["start"]), _day_end(w["end"]))
                    for w in lv.get("test_windows") or []
                ),
            )
            for lv in raw["levels"]
        )
        strategy = str(raw["strategy"])
        ranges = {**raw["parameters"], **(raw.get("strategy_parameters") or {}).get(strategy, {})}
        robustness = dict(raw.get("robustness") or {})
        for key in ("fee_multipliers", "slippage_pct"):
            if key in robustness:
                robustness[key] = tuple(float(v) for v in robustness[key])
        spec = CurriculumSpec(
            strategy=strategy,
            costs=CostModel(**raw.get("costs", {})),
            train_fraction=float(split["train"]),
            validation_fraction=float(split["validation"]),
            holdout_days=int(raw["holdout_days"]),
            min_segment_bars=int(raw["min_segment_bars"]),
            seed=int(raw["seed"]),
            constraints=Constraints(**raw["constraints"]),
            parameters=tuple(
                ParamRange(
                    name=name,
                    low=float(p.get("low", 0.0)),
                    high=float(p.get("high", 0.0)),
                    step=float(p["step"]) if "step" in p else None,
                    choices=tuple(p.get("choices", ())),
                )
                for name, p in ranges.items()
            ),
            stress_periods={
                name: (_day_start(p["start"]), _day_end(p["end"]))
                for name, p in raw.get("stress_periods", {}).items()
            },
            levels=levels,
            optimizer=OptimizerSpec(**(raw.get("optimizer") or {})),
            progression=ProgressionSpec(**(raw.get("progression") or {})),
            robustness=RobustnessSpec(**robustness),
            signal_file=(raw.get("strategy_options") or {}).get("path"),
            strategy_options=dict(raw.get("strategy_options") or {}),
            test_era_start=_test_era(raw["test_era"]),
            selection=str(raw.get("selection", "best")),
            plateau_fraction=_number(raw, "plateau_fraction", 0.05),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"invalid curriculum configuration: {exc!r}") from exc
    if [lv.level for lv in levels] != list(range(1, len(levels) + 1)):
        raise ValueError(
            f"curriculum levels must be numbered 1..N in order, got {[lv.level for lv in levels]}"
        )
    fractions = (spec.train_fraction, spec.validation_fraction)
    if min(fractions) <= 0 or sum(fractions) >= 1:
        raise ValueError(
            "split fractions must leave a non-empty test period: split.train and "
            "split.validation must each be in (0, 1) with train + validation < 1, got "
            f"{spec.train_fraction:g} + {spec.validation_fraction:g}"
        )
    return spec
