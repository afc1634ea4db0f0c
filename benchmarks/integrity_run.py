"""One world of ``make bench-integrity`` through the pipeline the assets run.

The curriculum: ``run_level`` per level in order, each study warm-started from the previous
level's choice and a level skipped when the previous one met the skip rule, as
``assets/curriculum.py`` does; every result is stored with ``WarehouseResource`` on a temporary
DuckDB file. Promotion: ``promotion/asset._regime_candidates`` reads those results and
``promotion.state_machine.run_promotion_cycle`` takes each regime's candidates through the COLD gate
with a ``ParameterRegistryResource`` on a temporary SQLite file. Nothing here re-implements a
gate, a selection or a verdict; it only wires the same calls without Dagster's run machinery.
"""

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import polars as pl
import yaml

from benchmarks.common import UNIVERSE
from ffe_dagster.assets.loading import load_level_data
from ffe_dagster.config import load_curriculum, load_universe
from ffe_dagster.config.settings import PACKAGE_DIR
from ffe_dagster.core.backtest.reference import Direction
from ffe_dagster.core.backtest.strategies import FileSignals
from ffe_dagster.core.promotion.config import PromotionConfig, Stage
from ffe_dagster.core.promotion.performance import combine_live_results, paper_performance
from ffe_dagster.core.regimes.detection import RegimeConfig, detect_regimes
from ffe_dagster.core.study.evaluation import Params
from ffe_dagster.core.study.level_records import outcome_result
from ffe_dagster.core.study.level_result import LevelResult
from ffe_dagster.core.study.level_specs import CurriculumSpec
from ffe_dagster.core.study.levels import (
    LevelData,
    entry_strategy,
    level_study_config,
    run_level,
    skipped_level_result,
)
from ffe_dagster.core.study.progression import Decision
from ffe_dagster.promotion.asset import _regime_candidates  # pyright: ignore[reportPrivateUsage]
from ffe_dagster.promotion.state_machine import Market, run_promotion_cycle
from ffe_dagster.resources.registry import ParameterRegistryResource
from ffe_dagster.resources.warehouse import WarehouseResource
from ffe_dagster.sources.files import curriculum_signals

CURRICULUM_FILE = PACKAGE_DIR / "config" / "curriculum.yaml"
BAR_PERIOD = timedelta(hours=1)
# The exits a planted signal is traded with to measure its true Sharpe: the centre of the
# curriculum's search ranges, so the figure does not depend on what a study would pick.
DEFAULT_EXITS: Params = {
    "stop_loss_pct": 2.75,
    "take_profit_pct": 5.25,
    "position_size_pct": 2.0,
    "trailing_stop_pct": 2.5,
    "stop_mode": "fixed",
}


@dataclass(frozen=True, slots=True)
class LevelFigures:
    """What one level decided in a world."""

    level: int
    passed: bool
    skipped: bool
    failed_criteria: tuple[str, ...]
    test: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class RegimeFigures:
    """The COLD decision of one regime in a world."""

    regime: str
    level: int | None
    decision: str  # advance (passed COLD), reject, or skip (no candidate reached COLD)
    passed_cold: bool
    reason: str
    metrics: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class WorldOutcome:
    """Every level's verdict and every regime's COLD decision in one world."""

    levels: tuple[LevelFigures, ...]
    regimes: tuple[RegimeFigures, ...]
    seconds: float


def world_curriculum(strategy: str, signal_file: Path | None, folder: Path) -> CurriculumSpec:
    """The project's curriculum with another entry strategy (or signal file), loaded and checked
    by ``load_curriculum`` like the real file; every other setting is the user's, unchanged."""
    raw: dict[str, Any] = yaml.safe_load(CURRICULUM_FILE.read_text())
    raw["strategy"] = strategy
    raw["strategy_options"] = {"path": str(signal_file)} if signal_file else {}
    path = folder / "curriculum.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_curriculum(path)


def world_level_data(
    bars: Mapping[str, pl.DataFrame],
    warehouse: WarehouseResource,
    holdout_days: int,
    signals: FileSignals | None = None,
) -> LevelData:
    """The world's bars stored as ``validated_bars``, their regimes detected and stored as the
    ``market_regimes`` asset does, then read back by ``assets/loading.load_level_data``: the
    level and promotion assets' own loader (hold-outs, bars per year)."""
    config = RegimeConfig()
    for instrument, frame in bars.items():
        start, end = frame["ts"].min(), frame["ts"].max()
        if not isinstance(start, datetime) or not isinstance(end, datetime):
            raise ValueError(f"{instrument}: a world needs bars, got none")
        warehouse.replace_window("validated_bars", instrument, start, end + BAR_PERIOD, frame)
        stored = warehouse.read_bars("validated_bars", instrument)
        warehouse.replace_regimes(instrument, detect_regimes(stored, config))
    return load_level_data(warehouse, load_universe(UNIVERSE), holdout_days, signals=signals)


def _run_curriculum(
    curriculum: CurriculumSpec, data: LevelData, warehouse: WarehouseResource, profile: str
) -> list[LevelFigures]:
    storage = optuna.storages.InMemoryStorage()
    previous: LevelResult | None = None
    figures: list[LevelFigures] = []
    for spec in curriculum.levels:
        if previous is not None and previous.decision is Decision.SKIP_NEXT:
            result = skipped_level_result(spec, previous)
        else:
            outcome = run_level(
                spec,
                curriculum,
                data,
                study=level_study_config(curriculum, spec.asset, storage, spec.trials[profile]),
                warm_start=previous.chosen_params if previous else None,
            )
            result = outcome_result(outcome)
        warehouse.save_level_result(spec.level, spec.asset, "bench-integrity", result)
        previous = result
        figures.append(
            LevelFigures(
                level=spec.level,
                passed=result.passed,
                skipped=result.skipped,
                failed_criteria=tuple(
                    f"{c.name} {c.value:.3g} vs {c.threshold:g}"
                    for c in result.criteria
                    if not c.passed
                ),
                test={k: float(v) for k, v in result.test.items()},
            )
        )
    return figures


def run_world(
    bars: Mapping[str, pl.DataFrame],
    strategy: str,
    signal_file: Path | None,
    folder: Path,
    profile: str,
) -> WorldOutcome:
    """The curriculum then one promotion cycle on ``bars``; every store lives in ``folder``."""
    started = datetime.now()
    curriculum = world_curriculum(strategy, signal_file, folder)
    warehouse = WarehouseResource(path=str(folder / "warehouse.duckdb"))
    data = world_level_data(
        bars, warehouse, curriculum.holdout_days, curriculum_signals(curriculum)
    )
    levels = _run_curriculum(curriculum, data, warehouse, profile)
    registry = ParameterRegistryResource(url=f"sqlite:///{folder / 'registry.db'}")
    market = Market(
        bars=data.bars,
        periods_per_year=data.periods_per_year,
        strategy=entry_strategy(curriculum, data.signals),
        costs=curriculum.costs,
        bar_period=BAR_PERIOD,
    )
    newest = max(frame["ts"].max() for frame in data.bars.values())  # type: ignore[type-var]
    report = run_promotion_cycle(
        registry,
        regimes=_regime_candidates(warehouse, curriculum),
        market=market,
        live=combine_live_results([]),
        now=newest + BAR_PERIOD,  # type: ignore[operator]
        config=PromotionConfig(),
        level_directions={spec.level: spec.direction for spec in curriculum.levels},
        trigger="manual",
        run_id=None,
    )
    level_of = {g: spec.level for spec in curriculum.levels for g in spec.promotes}
    regimes: list[RegimeFigures] = []
    for row in report.rows:
        if row.stage != Stage.COLD:
            continue
        metrics: dict[str, float] = {}
        if row.version is not None:
            metrics = {
                k: float(v) for k, v in registry.version(row.regime, row.version).metrics.items()
            }
        regimes.append(
            RegimeFigures(
                regime=row.regime,
                level=level_of.get(row.regime),
                decision=row.decision,
                passed_cold=row.decision == "advance",
                reason=row.reason,
                metrics=metrics,
            )
        )
    return WorldOutcome(
        levels=tuple(levels),
        regimes=tuple(regimes),
        seconds=(datetime.now() - started).total_seconds(),
    )


def planted_sharpe(
    bars: Mapping[str, pl.DataFrame], signal_file: Path, holdout_days: int, folder: Path
) -> tuple[float, float]:
    """The planted signals' own Sharpe after costs with ``DEFAULT_EXITS``, both directions:
    on the promotion hold-out (what COLD judges) and on the whole history."""
    curriculum = world_curriculum("file_signals", signal_file, folder)
    warehouse = WarehouseResource(path=str(folder / "truth.duckdb"))
    data = world_level_data(bars, warehouse, holdout_days, curriculum_signals(curriculum))
    strategy = entry_strategy(curriculum, data.signals)

    def sharpe(since: Mapping[str, datetime]) -> float:
        return paper_performance(
            data.bars,
            DEFAULT_EXITS,
            since=since,
            strategy=strategy,
            direction=Direction.BOTH,
            costs=curriculum.costs,
            periods_per_year=data.periods_per_year,
        ).sharpe

    first = {k: v["ts"][0] - BAR_PERIOD for k, v in data.bars.items()}
    return sharpe(data.holdout_start), sharpe(first)


def temp_folder(root: Path | None, name: str) -> Path:
    """A fresh folder for one world's files."""
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
