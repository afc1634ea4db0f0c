"""Shared fixtures: settings that keep every store under a temporary folder."""

from pathlib import Path

import pytest
import yaml

from ffe_dagster.settings import PACKAGE_DIR, Settings


@pytest.fixture
def tiny_settings(tmp_path: Path) -> Settings:
    """Settings for a full cycle in ``tmp_path`` with 4-6 trials per level."""
    raw = yaml.safe_load((PACKAGE_DIR / "config" / "curriculum.yaml").read_text())
    for level in raw["levels"]:
        level["trials"]["quick"] = 4 + level["level"] // 2
    curriculum = tmp_path / "curriculum.yaml"
    curriculum.write_text(yaml.safe_dump(raw))
    return Settings.from_env(
        {
            "FFE_VAR_DIR": str(tmp_path / "var"),
            "FFE_CURRICULUM": str(curriculum),
            "FFE_TRIAL_PROFILE": "quick",
        }
    )
