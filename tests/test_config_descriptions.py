"""The asset descriptions are composed from the loaded configuration: a limit edited in
``promotion.yaml`` or ``curriculum.yaml`` shows in the UI, and no copy of the defaults remains."""

from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey

from ffe_dagster.config import ConfigError
from ffe_dagster.config.settings import CONFIG_DIR, Settings
from ffe_dagster.definitions import build_definitions


def _description(settings: Settings, asset: str) -> str:
    defs = build_definitions(settings)
    description = defs.resolve_assets_def(asset).descriptions_by_key[AssetKey(asset)]
    assert description
    return description


def test_the_promotion_description_shows_the_limits_of_the_file(
    tiny_settings: Settings, tmp_path: Path
) -> None:
    bundled = _description(tiny_settings, "promoted_parameters")
    for shown in ("Sharpe >= 0.5", "10 % of the capital for 24 h", "daily loss <= $5"):
        assert shown in bundled

    raw = yaml.safe_load((CONFIG_DIR / "promotion.yaml").read_text())
    raw["cold"].update(min_sharpe=0.75, window_days=[5, 10])
    raw["warm"]["min_hours"] = 6.0
    raw["limited"].update(capital_fraction=0.25, min_hours=36.0)
    raw["safety"]["max_daily_loss_usd"] = 12.5
    edited = tmp_path / "promotion.yaml"
    edited.write_text(yaml.safe_dump(raw))
    description = _description(replace(tiny_settings, promotion_path=edited), "promoted_parameters")
    for shown in (
        "Sharpe >= 0.75",
        "the last 5 days (widened to 10 until the window holds 20 trades)",
        "judged after 6 h",
        "25 % of the capital for 36 h",
        "daily loss <= $12.5",
    ):
        assert shown in description
    assert "Sharpe >= 0.5," not in description and "10 % of the capital" not in description


def test_a_bad_promotion_file_stops_the_definitions_from_loading(
    tiny_settings: Settings, tmp_path: Path
) -> None:
    raw = yaml.safe_load((CONFIG_DIR / "promotion.yaml").read_text())
    raw["safety"]["max_drawdown_pct"] = 0.0
    bad = tmp_path / "promotion.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"promotion.yaml: safety.max_drawdown_pct must be in"):
        build_definitions(replace(tiny_settings, promotion_path=bad))


def test_a_level_description_shows_its_trials_criteria_and_progression(
    tiny_settings: Settings, tmp_path: Path
) -> None:
    raw = yaml.safe_load(tiny_settings.curriculum_path.read_text())
    raw["levels"][0]["trials"]["quick"] = 7
    raw["levels"][0]["pass"]["min_sharpe"] = 0.77
    raw["progression"].update(repeat_trial_factor=2.0, max_tries=5)
    edited = tmp_path / "curriculum.yaml"
    edited.write_text(yaml.safe_dump(raw))
    description = _description(
        replace(tiny_settings, curriculum_path=edited), "level_1_long_uptrends"
    )
    for shown in (
        "An Optuna study of 7 trials (profile 'quick')",
        "min_sharpe 0.77",
        "repeats the level with 2x the trials (at most 5 tries)",
    ):
        assert shown in description
