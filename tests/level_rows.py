"""Hand-made level results for tests: a row with only the fields a test is about, as a record."""

from collections.abc import Mapping
from typing import Any

from ffe_dagster.core.study.level_result import LevelResult

# What a hand-made row leaves out and ``LevelResult.from_row`` requires.
REQUIRED = {"level": 1, "name": "", "direction": "long", "passed": False}


def level_row(row: Mapping[str, Any]) -> LevelResult:
    """``row`` (a stored level result's fields, some left out) read back as the record."""
    return LevelResult.from_row({**REQUIRED, **row})
