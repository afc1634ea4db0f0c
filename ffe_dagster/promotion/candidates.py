"""Which candidates each regime sends to COLD, from the levels' stored results (moved here from
``promotion/asset.py`` so the asset and the replay build them in one place)."""

from collections.abc import Callable, Mapping
from typing import Any

from ffe_dagster.core.promotion.config import PromotionRegime
from ffe_dagster.core.study.level_specs import (
    CriterionResult,
    CurriculumSpec,
    LevelSpec,
    level_verdict,
)
from ffe_dagster.promotion.state_machine import Candidate, RegimeCandidates


def level_block(spec: LevelSpec, result: Mapping[str, Any]) -> str | None:
    """Why the level's verdict keeps its candidates out of COLD, or None when it lets them in
    (the level passed, or sets ``promote_without_pass``)."""
    if result.get("passed") or spec.promote_without_pass:
        return None
    if result.get("skipped"):
        return f"level {spec.level} did not pass: it was skipped, so nothing tested it"
    criteria = [
        CriterionResult(
            c["name"],
            float(c["threshold"]),
            float(c["value"]),
            bool(c["passed"]),
            c.get("note", ""),
        )
        for c in result.get("criteria", [])
    ]
    return level_verdict(spec.level, result.get("chosen") is not None, criteria)


def regime_candidates(
    curriculum: CurriculumSpec, latest_result: Callable[[int], Mapping[str, Any] | None]
) -> list[RegimeCandidates]:
    """Per regime a level promotes, that level's candidates in validation order (none when its
    verdict blocks them, with the reason). ``latest_result`` gives a level's newest stored
    result; a promoting level without one is an error naming the asset to materialize."""
    out: list[RegimeCandidates] = []
    for spec in curriculum.levels:
        if not spec.promotes:
            continue
        result = latest_result(spec.level)
        if result is None:
            raise ValueError(f"level {spec.level} has no result: materialize {spec.asset}")
        blocked = level_block(spec, result)
        candidates = [
            Candidate(
                params=c["params"],
                validation_sharpe=float(c["validation"]["sharpe"]),
                number=c.get("number"),
            )
            for c in result["candidates"]
        ]
        for regime in spec.promotes:
            out.append(
                RegimeCandidates(
                    regime=PromotionRegime(regime),
                    level=spec.level,
                    direction=spec.direction,
                    candidates=[] if blocked else candidates,
                    source_run_id=result.get("mlflow_run_id"),
                    blocked=blocked,
                )
            )
    return out
