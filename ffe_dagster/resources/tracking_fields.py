"""What one MLflow run holds of its own: its name, tags, params, metrics and JSON artifacts (the
tracking functions add where it sits: code version, cycle, parent)."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class RunFields:
    """A run's own fields; ``json_artifacts`` maps a file name to the payload written as JSON."""

    run_name: str
    tags: Mapping[str, str]
    params: Mapping[str, Any]
    metrics: Mapping[str, float]
    json_artifacts: Mapping[str, Any]
