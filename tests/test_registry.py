"""The parameter registry: versions, transitions and rollback on a real SQLite database."""

from pathlib import Path

import pytest

from ffe_dagster.resources.registry import ParameterRegistryResource


def _record(registry: ParameterRegistryResource, x: float, promoted: bool) -> int:
    return registry.record(
        regime="BULL",
        level=1,
        params={"x": x},
        metrics={"sharpe": x},
        stage="COLD",
        promoted=promoted,
        reason=f"because {x}",
        trigger="manual",
        run_id="run",
    )


def test_versions_transitions_and_rollback(tmp_path: Path) -> None:
    registry = ParameterRegistryResource(url=f"sqlite:///{tmp_path / 'r.db'}")
    assert registry.current("BULL") is None
    assert _record(registry, 1.0, True) == 1
    assert _record(registry, 2.0, False) == 2  # rejected: the current version stays
    current = registry.current("BULL")
    assert current is not None and current["version"] == 1
    assert _record(registry, 3.0, True) == 3
    current = registry.current("BULL")
    assert current is not None and current["params"] == {"x": 3.0}
    assert registry.rollback("BULL", reason="breach", trigger="manual", run_id="r2") == 1
    current = registry.current("BULL")
    assert current is not None and current["version"] == 1
    statuses = [v["status"] for v in registry.history("BULL")]
    assert statuses == ["current", "rejected", "rolled_back"]
    actions = [(t["action"], t["from_version"], t["to_version"]) for t in registry.transitions()]
    assert actions == [
        ("promote", None, 1),
        ("reject", 1, 1),
        ("promote", 1, 3),
        ("rollback", 3, 1),
    ]
    with pytest.raises(ValueError, match="no earlier promoted version"):
        registry.rollback("BULL", reason="again", trigger="manual", run_id=None)
