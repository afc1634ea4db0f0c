"""Which candidates each regime sends to COLD, from the levels' stored results (moved here from
``promotion/asset.py`` so the asset and the replay build them in one place)."""

from collections.abc import Callable

from ffe_dagster.core.promotion.config import PromotionRegime
from ffe_dagster.core.study.level_result import LevelResult
from ffe_dagster.core.study.level_specs import CurriculumSpec, LevelSpec, level_verdict
from ffe_dagster.promotion.state_machine import RegimeCandidates


def level_block(spec: LevelSpec, result: LevelResult) -> str | None:
    """Why the level's verdict keeps its candidates out of COLD, or None when it lets them in
    (the level passed, or sets ``promote_without_pass``)."""
    if result.passed or spec.promote_without_pass:
        return None
    if result.skipped:
        return f"level {spec.level} did not pass: it was skipped, so nothing tested it"
    return level_verdict(spec.level, result.chosen is not None, result.criteria)


def regime_candidates(
    curriculum: CurriculumSpec, latest_result: Callable[[int], LevelResult | None]
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
        candidates = list(result.candidates)
        for regime in spec.promotes:
            out.append(
                RegimeCandidates(
                    regime=PromotionRegime(regime),
                    level=spec.level,
                    direction=spec.direction,
                    candidates=[] if blocked else candidates,
                    source_run_id=result.mlflow_run_id,
                    blocked=blocked,
                )
            )
    return out
