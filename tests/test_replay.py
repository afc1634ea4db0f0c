"""The replay against the real parts: the level assets and ``promoted_parameters`` materialized
on the same cut bars make the decisions a replayed cycle makes; a replay on the history cut at
its last cycle gives the same records as on the whole history (no bar at or after a cycle's
time steers it); a restarted replay continues from its last completed cycle."""

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import pytest
from dagster import materialize

from ffe_dagster.assets.curriculum import build_curriculum_assets
from ffe_dagster.config import load_curriculum, load_universe
from ffe_dagster.config.settings import PACKAGE_DIR
from ffe_dagster.core.data.bars import interval_to_timedelta
from ffe_dagster.core.promotion.config import PromotionConfig, PromotionRegime
from ffe_dagster.core.regimes.detection import RegimeConfig, detect_regimes
from ffe_dagster.core.replay.equity import Trading
from ffe_dagster.core.replay.timeline import Cadence, curriculum_at, level_data_before, rows_before
from ffe_dagster.core.study.eras import LevelData
from ffe_dagster.core.study.level_specs import CurriculumSpec
from ffe_dagster.core.study.levels import entry_strategy
from ffe_dagster.promotion.asset import build_promotion_asset
from ffe_dagster.replay.driver import ReplayConfig, bundled_history, history_of, run_replay
from ffe_dagster.replay.replay_cycle import CycleInputs, replay_cycle
from ffe_dagster.resources.optuna_storage import open_storage
from ffe_dagster.resources.registry import ParameterRegistryResource
from ffe_dagster.resources.studies import OptunaStorageResource
from ffe_dagster.resources.tracking import MlflowTrackingResource
from ffe_dagster.resources.warehouse import WarehouseResource

UNIVERSE = load_universe(PACKAGE_DIR / "config" / "universe.yaml")
T = datetime(2022, 4, 1, tzinfo=UTC)


def _tiny(curriculum: CurriculumSpec, *, promote_all: bool = False) -> CurriculumSpec:
    # 4-6 trials per level and 4 walk-forward trials: small, but every step still runs.
    levels = tuple(
        replace(
            spec,
            trials={"quick": 4 + spec.level // 2, "full": 4 + spec.level // 2},
            promote_without_pass=promote_all or spec.promote_without_pass,
        )
        for spec in curriculum.levels
    )
    robustness = replace(curriculum.robustness, walk_forward_trials={"quick": 4, "full": 4})
    return replace(curriculum, levels=levels, robustness=robustness)


CURRICULUM = _tiny(load_curriculum(PACKAGE_DIR / "config" / "curriculum.yaml"))


@pytest.fixture(scope="module")
def history() -> LevelData:
    return bundled_history(UNIVERSE, PACKAGE_DIR / "data" / "samples")


def _materialize_normal_cycle(
    curriculum: CurriculumSpec, data: LevelData, folder: Path
) -> tuple[WarehouseResource, ParameterRegistryResource]:
    """The assets of one cycle, on a warehouse that holds only the bars before T."""
    warehouse = WarehouseResource(path=str(folder / "warehouse.duckdb"))
    for key, bars in data.bars.items():
        warehouse.replace_window("validated_bars", key, datetime(2000, 1, 1, tzinfo=UTC), T, bars)
        # what the market_regimes asset stores: the detector over the validated bars
        warehouse.replace_regimes(key, detect_regimes(bars, RegimeConfig()))
    registry = ParameterRegistryResource(url=f"sqlite:///{folder / 'registry.db'}")
    assets = [
        *build_curriculum_assets(curriculum, UNIVERSE, "quick"),
        build_promotion_asset(
            curriculum, UNIVERSE, folder / "export" / "current.json", folder / "live"
        ),
    ]
    result = materialize(
        assets,
        resources={
            "warehouse": warehouse,
            "registry": registry,
            "optuna_storage": OptunaStorageResource(
                url=f"journal:///{folder / 'optuna' / 'studies.journal'}"
            ),
            "mlflow_tracking": MlflowTrackingResource(
                tracking_uri=f"sqlite:///{folder / 'mlflow.db'}",
                artifact_dir=str(folder / "artifacts"),
                experiment="ffe_curriculum",
            ),
        },
        tags={"dagster/schedule_name": "cycle_schedule"},
    )
    assert result.success
    return warehouse, registry


def _actions(registry: ParameterRegistryResource) -> list[tuple[Any, ...]]:
    """What the registry decided, without the times and run ids that differ between runs."""
    out: list[tuple[Any, ...]] = []
    for regime in PromotionRegime:
        for v in registry.history(regime.value):
            out.append(
                (
                    regime.value,
                    v.version,
                    v.level,
                    v.direction,
                    v.stage,
                    v.status,
                    v.reason,
                    v.params,
                    v.metrics,
                )
            )
        for d in registry.regime_decisions(regime.value):
            out.append((regime.value, d.level, d.stage, d.action, d.reason))
        for c in registry.transitions(regime.value):
            out.append((regime.value, c.version, c.action, c.to_stage, c.reason))
    return out


def test_a_replayed_cycle_makes_the_decisions_the_assets_make(
    history: LevelData, tmp_path: Path
) -> None:
    # Every level may send candidates, so COLD judges sets of every regime (not only verdicts).
    curriculum = curriculum_at(_tiny(CURRICULUM, promote_all=True), T, test_days=180)
    data = level_data_before(history, T, curriculum.holdout_days)
    warehouse, normal = _materialize_normal_cycle(curriculum, data, tmp_path / "normal")

    replayed = ParameterRegistryResource(url=f"sqlite:///{tmp_path / 'replay' / 'registry.db'}")
    inputs = CycleInputs(
        registry=replayed,
        storage=open_storage(f"journal:///{tmp_path / 'replay' / 'studies.journal'}"),
        trial_profile="quick",
        promotion=PromotionConfig(),
        trading=Trading(entry_strategy(curriculum), curriculum.costs, data.periods_per_year),
        bar_period=interval_to_timedelta(UNIVERSE.bar_interval),
        folder=tmp_path / "replay",
    )
    record = replay_cycle(inputs, curriculum, data, T)

    for spec in curriculum.levels:
        stored = warehouse.latest_level_result(spec.level)
        assert stored is not None
        assert record["levels"][str(spec.level)]["chosen"] == stored.chosen_params, spec.asset
        assert record["levels"][str(spec.level)]["passed"] == stored.passed, spec.asset
    actions = _actions(normal)
    assert actions == _actions(replayed)
    # COLD judged sets of the regimes: versions exist, so the comparison covered real decisions
    assert any(len(a) == 9 for a in actions)


def test_a_replay_never_sees_a_bar_at_or_after_its_cycle_and_resumes(
    history: LevelData, tmp_path: Path
) -> None:
    config = ReplayConfig(
        start=datetime(2022, 3, 1, tzinfo=UTC),
        end=datetime(2022, 5, 1, tzinfo=UTC),
        every=Cadence.MONTHLY,
        folder=tmp_path / "whole",
    )
    whole = run_replay(config, CURRICULUM, UNIVERSE, history)
    assert [r["t"] for r in whole] == ["2022-03-01T00:00:00+00:00", "2022-04-01T00:00:00+00:00"]
    # The same replay on a history that ends just before its last cycle: if any choice had
    # used a bar at or after its cycle's time, some record would differ.
    cut = history_of(rows_before(history.bars, T), UNIVERSE)
    short = run_replay(replace(config, folder=tmp_path / "cut"), CURRICULUM, UNIVERSE, cut)
    assert short == whole
    assert sum(len(r["trial_sharpes"]) for r in whole) > 0

    # Restarted: every completed cycle is taken from the store ...
    seen: list[tuple[int, bool]] = []
    again = run_replay(
        config, CURRICULUM, UNIVERSE, history, on_cycle=lambda i, n, r, s: seen.append((i, s))
    )
    assert again == whole and seen == [(0, True), (1, True)]
    # ... and one killed during its second cycle (no record stored) redoes only that cycle,
    # from the registry as the first cycle left it.
    (config.folder / "cycles" / "20220401T0000.json").unlink()
    seen.clear()
    resumed = run_replay(
        config, CURRICULUM, UNIVERSE, history, on_cycle=lambda i, n, r, s: seen.append((i, s))
    )
    assert resumed == whole and seen == [(0, True), (1, False)]


def test_selection_rules_share_studies_but_never_a_cycle_record(
    history: LevelData, tmp_path: Path
) -> None:
    studies = tmp_path / "optuna" / "studies.journal"
    config = ReplayConfig(
        start=T,
        end=datetime(2022, 5, 1, tzinfo=UTC),
        every=Cadence.MONTHLY,
        folder=tmp_path / "replay",
        studies=studies,
    )
    best = run_replay(config, replace(CURRICULUM, selection="best"), UNIVERSE, history)
    names = set(optuna.get_all_study_names(open_storage(f"journal:///{studies}")))
    assert names  # the levels' studies are in the shared journal
    seen: list[tuple[int, bool]] = []
    plateau = run_replay(
        config,
        replace(CURRICULUM, selection="plateau"),
        UNIVERSE,
        history,
        on_cycle=lambda i, n, r, s: seen.append((i, s)),
    )
    # best's stored record is not taken for plateau's cycle: the rule is part of its key ...
    assert seen == [(0, False)] and plateau[0]["key"] != best[0]["key"]
    # ... while the studies are the same ones (the rule is not part of a study's identity)
    assert set(optuna.get_all_study_names(open_storage(f"journal:///{studies}"))) == names
