"""A level's verdict gates its regimes: candidates of a level that did not pass never enter COLD;
the registry, the export's ``changes``, the cycle report and the asset's log say which level and
which criteria; ``promote_without_pass`` (per level, off by default) relaxes it."""

import json
from datetime import UTC, datetime

import pytest
import yaml
from dagster import materialize

from ffe_dagster.config import load_curriculum, load_universe
from ffe_dagster.config.settings import Settings
from ffe_dagster.core.reporting.recommendation import failure_phrases
from ffe_dagster.core.study.level_specs import CriterionResult, describe_failure, level_verdict
from ffe_dagster.definitions import EXPORT_FILE
from ffe_dagster.promotion.asset import build_promotion_asset, level_block
from ffe_dagster.resources.registry import ParameterRegistryResource
from ffe_dagster.resources.tracking import MlflowTrackingResource
from ffe_dagster.resources.warehouse import WarehouseResource
from tests.level_rows import level_row
from tests.promotion_cycle_helpers import HOUR, T0, A, B, load_history, upto

FAILED_L4 = [
    {"name": "min_win_rate_pct", "threshold": 53.0, "value": 55.0, "passed": True},
    {"name": "min_deflated_sharpe", "threshold": 0.95, "value": 0.41, "passed": False},
    {"name": "max_pbo", "threshold": 0.5, "value": 0.62, "passed": False},
]
L4_REASON = "level 4 did not pass: deflated Sharpe 0.41 < 0.95; PBO 0.62 > 0.5"


def test_the_verdict_names_the_level_and_each_failed_criterion() -> None:
    criteria = [
        CriterionResult(c["name"], c["threshold"], c["value"], c["passed"]) for c in FAILED_L4
    ]
    assert level_verdict(4, True, criteria) == L4_REASON
    assert level_verdict(4, True, criteria[:1]) is None  # every criterion passed
    assert level_verdict(1, False, []) == "level 1 did not pass: no parameter set was chosen"
    assert describe_failure(CriterionResult("min_win_rate_pct", 50, 41.25, False)) == (
        "win rate 41.25% < 50%"
    )
    assert describe_failure(CriterionResult("min_total_return_pct", 0, -0.5, False)) == (
        "total return -0.50% <= 0%"
    )
    stress = CriterionResult(
        "stress_min_total_return_pct", -5.0, float("nan"), False, "not evaluated: no bars"
    )
    assert describe_failure(stress) == "worst stress-window return not evaluated: no bars"


def _seed(settings: Settings, level4_passed: bool) -> None:
    warehouse = WarehouseResource(path=str(settings.warehouse_path))
    for symbol, frame in upto(load_history(), T0).items():
        warehouse.replace_window(
            "validated_bars", symbol, datetime(2000, 1, 1, tzinfo=UTC), T0 + HOUR, frame
        )
    for level, params in ((1, B), (2, B), (4, A)):
        candidate = {"number": 3, "params": params, "validation": {"sharpe": 2.0}}
        passed = level4_passed or level != 4
        result = {
            "level": level,
            "passed": passed,
            "chosen": candidate,
            "criteria": [] if passed else FAILED_L4,
            "candidates": [candidate],
            "mlflow_run_id": f"mlflow-{level}",
        }
        warehouse.save_level_result(level, f"level_{level}", "run", level_row(result))


def _run(settings: Settings) -> tuple[ParameterRegistryResource, dict, dict]:
    asset = build_promotion_asset(
        load_curriculum(settings.curriculum_path),
        load_universe(settings.universe_path),
        settings.export_dir / EXPORT_FILE,
        settings.var_dir / "live_results",
    )
    registry = ParameterRegistryResource(url=settings.registry_url)
    result = materialize(
        [asset],
        resources={
            "warehouse": WarehouseResource(path=str(settings.warehouse_path)),
            "registry": registry,
            "mlflow_tracking": MlflowTrackingResource(
                tracking_uri=settings.mlflow_tracking_uri,
                artifact_dir=str(settings.mlflow_artifact_dir),
                experiment=settings.mlflow_experiment,
            ),
        },
        tags={"dagster/schedule_name": "cycle_schedule"},
    )
    assert result.success
    (event,) = result.asset_materializations_for_node("promoted_parameters")
    exported = json.loads((settings.export_dir / EXPORT_FILE).read_text())
    return registry, dict(event.metadata), exported


def test_a_level_that_did_not_pass_sends_no_candidate_to_cold(tiny_settings: Settings) -> None:
    _seed(tiny_settings, level4_passed=False)
    registry, metadata, exported = _run(tiny_settings)
    for regime in ("SIDEWAYS", "DEFAULT"):
        assert registry.history(regime) == []  # no version: nothing was judged at COLD
        (noted,) = registry.regime_decisions(regime)
        assert (noted.level, noted.stage, noted.action) == (4, "COLD", "blocked")
        assert noted.reason == L4_REASON
        assert noted.trigger == "schedule"
    # levels 1 and 2 passed: their regimes were judged at COLD (a version each)
    assert [len(registry.history(r)) for r in ("BULL", "BEAR")] == [1, 1]
    blocked = [c for c in exported["changes"] if c["action"] == "blocked"]
    assert [(c["regime"], c["reason"]) for c in blocked] == [
        ("SIDEWAYS", L4_REASON),
        ("DEFAULT", L4_REASON),
    ]
    assert metadata["blocked"].value == 2 and metadata["promoted"].value == 0
    assert L4_REASON in str(metadata["decisions"].value)
    assert "level 4 did not pass" in str(metadata["curriculum_report"].value)


def test_promote_without_pass_lets_the_level_send_its_candidates(
    tiny_settings: Settings,
) -> None:
    raw = yaml.safe_load(tiny_settings.curriculum_path.read_text())
    assert all(not lv.get("promote_without_pass", False) for lv in raw["levels"])  # default off
    raw["levels"][3]["promote_without_pass"] = True
    tiny_settings.curriculum_path.write_text(yaml.safe_dump(raw))
    _seed(tiny_settings, level4_passed=False)
    registry, _, exported = _run(tiny_settings)
    for regime in ("SIDEWAYS", "DEFAULT"):
        (version,) = registry.history(regime)
        assert version.params == A
        assert registry.regime_decisions(regime) == []
    assert not [c for c in exported["changes"] if c["action"] == "blocked"]


def test_a_skipped_level_blocks_its_regimes() -> None:
    curriculum = load_curriculum(Settings.from_env({}).curriculum_path)
    spec = curriculum.levels[1]
    skipped = level_row({"level": 2, "passed": False, "skipped": True, "criteria": []})
    assert (
        level_block(spec, skipped) == "level 2 did not pass: it was skipped, so nothing tested it"
    )
    assert level_block(spec, level_row({"level": 2, "passed": True})) is None


@pytest.mark.parametrize("value", [True, False])
def test_the_opt_out_is_read_per_level(value: bool, tmp_path) -> None:
    raw = yaml.safe_load((Settings.from_env({}).curriculum_path).read_text())
    raw["levels"][0]["promote_without_pass"] = value
    path = tmp_path / "curriculum.yaml"
    path.write_text(yaml.safe_dump(raw))
    spec = load_curriculum(path)
    assert spec.levels[0].promote_without_pass is value
    assert spec.levels[1].promote_without_pass is False


def test_the_report_says_not_evaluated_instead_of_a_number() -> None:
    criterion = {
        "name": "stress_min_total_return_pct",
        "threshold": -5.0,
        "value": float("nan"),
        "passed": False,
        "note": "not evaluated (no stress period falls in the test period)",
    }
    assert failure_phrases(level_row({"criteria": [criterion]})) == [
        "its stress criterion (not evaluated (no stress period falls in the test period))"
    ]
