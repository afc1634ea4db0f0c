"""What a level stores and reads back: its result as frozen records, and the row they make.

``LevelResult.to_json`` is the JSON-ready mapping the warehouse stores, MLflow logs as
``level_result.json`` and Dagster shows as metadata; ``LevelResult.from_row`` reads such a row
back. The keys and values are those the level asset has always written, so rows stored before
these records existed read back unchanged (``tests/core/test_level_result.py``).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ffe_dagster.core.study.level_specs import CriterionResult
from ffe_dagster.core.study.progression import Decision, Progression
from ffe_dagster.core.study.selection import Candidate

Segment = tuple[str, str, str, int]  # instrument, first ts, last ts, bars
_Metrics = Mapping[str, float]


@dataclass(frozen=True, slots=True)
class LevelTry:
    """One try of a level's study (a level repeats with more trials when progression says so)."""

    number: int  # stored as "try", from 1
    n_trials: int = 0
    completed_trials: int = 0
    stop_reason: str = ""
    seconds: float = 0.0
    decision: str = ""  # the progression decision after this try (a ``Decision`` value)
    reasons: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The try as the stored result holds it."""
        return {
            "try": self.number,
            "n_trials": self.n_trials,
            "completed_trials": self.completed_trials,
            "stop_reason": self.stop_reason,
            "seconds": self.seconds,
            "decision": self.decision,
            "reasons": list(self.reasons),
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "LevelTry":
        """A try read back from a stored result (hand-made rows may give only ``try``)."""
        return cls(
            number=int(row["try"]),
            n_trials=int(row.get("n_trials", 0)),
            completed_trials=int(row.get("completed_trials", 0)),
            stop_reason=str(row.get("stop_reason", "")),
            seconds=float(row.get("seconds", 0.0)),
            decision=str(row.get("decision", "")),
            reasons=tuple(str(r) for r in row.get("reasons") or ()),
        )


def criterion_to_json(c: CriterionResult) -> dict[str, Any]:
    """A pass criterion as the stored result holds it."""
    return {
        "name": c.name,
        "threshold": c.threshold,
        "value": c.value,
        "passed": c.passed,
        "note": c.note,
    }


def criterion_from_row(row: Mapping[str, Any]) -> CriterionResult:
    """A pass criterion read back from a stored result."""
    return CriterionResult(
        str(row["name"]),
        float(row["threshold"]),
        float(row["value"]),
        bool(row["passed"]),
        str(row.get("note") or ""),
    )


def progression_to_json(p: Progression) -> dict[str, Any]:
    """A progression decision as the stored result holds it."""
    return {"decision": p.decision.value, "reasons": list(p.reasons)}


def progression_from_row(row: Mapping[str, Any]) -> Progression:
    """A progression decision read back from a stored result."""
    return Progression(Decision(row["decision"]), tuple(str(r) for r in row.get("reasons") or ()))


def _candidate(c: Candidate | None) -> dict[str, Any] | None:
    return None if c is None else c.to_json()


@dataclass(frozen=True, slots=True)
class LevelResult:
    """A level's stored result: the study, the choice on validation, the test, the criteria.

    A skipped level (the previous one met the skip rule) has no study: ``skipped`` is True, it
    carries the previous choice forward as ``chosen``, and its row leaves out the study's fields
    (``study_name``, ``new_trials``, ``feasible_trials``, ``pareto_size``, ``segments``,
    ``stress``, ``parameter_shift``, ``stop_reason``), which read back as their defaults.
    ``analysis`` (the robustness, importance and look-ahead reports) stays a mapping of JSON
    values: its shape differs by level and is read only by the reports.
    """

    level: int
    name: str
    direction: str  # a ``Direction`` value
    passed: bool
    study_name: str = ""
    n_trials: int = 0
    new_trials: int = 0
    feasible_trials: int = 0
    pareto_size: int = 0
    segments: tuple[Segment, ...] = ()
    chosen: Candidate | None = None
    candidates: tuple[Candidate, ...] = ()  # in validation order, the chosen one first
    test: Mapping[str, float] = field(default_factory=dict[str, float])
    stress: Mapping[str, Mapping[str, float]] = field(default_factory=dict[str, _Metrics])
    criteria: tuple[CriterionResult, ...] = ()
    parameter_shift: Mapping[str, float] = field(default_factory=dict[str, float])
    progression: Progression | None = None
    tries: tuple[LevelTry, ...] = ()
    chain_trials: int = 0  # trials of the warm-start chain up to and including this level
    stop_reason: str = ""
    analysis: Mapping[str, Any] = field(default_factory=dict[str, Any])
    skipped: bool = False
    # Set by the level asset after the study: the MLflow run, the reuse keys (of the whole
    # result and of its study side, ``level_reuse``), for a result reused from an earlier run the
    # run it came from, and for one whose study side was kept and test side computed again
    # (``levels.retest_level``) the run holding the study side's plots and tables. Left out of
    # the row while unset.
    mlflow_run_id: str | None = None
    reuse_key: str | None = None
    reused: bool = False
    reused_from_run: str | None = None
    study_key: str | None = None
    study_side_from_run: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON-ready row (the warehouse stores it; MLflow and Dagster show it)."""
        common = {"level": self.level, "name": self.name, "direction": self.direction}
        progression = None if self.progression is None else progression_to_json(self.progression)
        if self.skipped:
            out: dict[str, Any] = {
                **common,
                "passed": self.passed,
                "skipped": True,
                "n_trials": self.n_trials,
                "chosen": _candidate(self.chosen),
                "candidates": [c.to_json() for c in self.candidates],
                "test": dict(self.test),
                "criteria": [criterion_to_json(c) for c in self.criteria],
                "progression": progression,
                "tries": [t.to_json() for t in self.tries],
                "chain_trials": self.chain_trials,
                "analysis": dict(self.analysis),
            }
        else:
            out = {
                **common,
                "passed": self.passed,
                "study_name": self.study_name,
                "n_trials": self.n_trials,
                "new_trials": self.new_trials,
                "feasible_trials": self.feasible_trials,
                "pareto_size": self.pareto_size,
                "segments": [list(s) for s in self.segments],
                "chosen": _candidate(self.chosen),
                "candidates": [c.to_json() for c in self.candidates],
                "test": dict(self.test),
                "stress": {k: dict(v) for k, v in self.stress.items()},
                "criteria": [criterion_to_json(c) for c in self.criteria],
                "parameter_shift": dict(self.parameter_shift),
                "progression": progression,
                "tries": [t.to_json() for t in self.tries],
                "chain_trials": self.chain_trials,
                "stop_reason": self.stop_reason,
                "analysis": dict(self.analysis),
            }
        if self.mlflow_run_id is not None:
            out["mlflow_run_id"] = self.mlflow_run_id
        if self.reuse_key is not None:
            out["reuse_key"] = self.reuse_key
        if self.reused:
            out["reused"] = True
        if self.reused_from_run is not None:
            out["reused_from_run"] = self.reused_from_run
        if self.study_key is not None:
            out["study_key"] = self.study_key
        if self.study_side_from_run is not None:
            out["study_side_from_run"] = self.study_side_from_run
        return out

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "LevelResult":
        """A stored row read back (``to_json``'s mapping, or a row an earlier version stored).

        Fields a row leaves out take their defaults (a skipped level's study fields, say);
        a row without ``level``, ``name``, ``direction`` or ``passed``, or with a value of
        the wrong kind, is an error naming the problem.
        """
        try:
            return cls._from_row(row)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid level result row: {exc!r}") from exc

    @classmethod
    def _from_row(cls, row: Mapping[str, Any]) -> "LevelResult":
        chosen = row.get("chosen")
        progression = row.get("progression")
        return cls(
            level=int(row["level"]),
            name=str(row["name"]),
            direction=str(row["direction"]),
            passed=bool(row["passed"]),
            study_name=str(row.get("study_name", "")),
            n_trials=int(row.get("n_trials", 0)),
            new_trials=int(row.get("new_trials", 0)),
            feasible_trials=int(row.get("feasible_trials", 0)),
            pareto_size=int(row.get("pareto_size", 0)),
            segments=tuple(
                (str(s[0]), str(s[1]), str(s[2]), int(s[3])) for s in row.get("segments") or ()
            ),
            chosen=None if chosen is None else Candidate.from_row(chosen),
            candidates=tuple(Candidate.from_row(c) for c in row.get("candidates") or ()),
            test=dict(row.get("test") or {}),
            stress={str(k): dict(v) for k, v in (row.get("stress") or {}).items()},
            criteria=tuple(criterion_from_row(c) for c in row.get("criteria") or ()),
            parameter_shift=dict(row.get("parameter_shift") or {}),
            progression=None if progression is None else progression_from_row(progression),
            tries=tuple(LevelTry.from_row(t) for t in row.get("tries") or ()),
            chain_trials=int(row.get("chain_trials", 0)),
            stop_reason=str(row.get("stop_reason", "")),
            analysis=dict(row.get("analysis") or {}),
            skipped=bool(row.get("skipped", False)),
            mlflow_run_id=_optional_str(row.get("mlflow_run_id")),
            reuse_key=_optional_str(row.get("reuse_key")),
            reused=bool(row.get("reused", False)),
            reused_from_run=_optional_str(row.get("reused_from_run")),
            study_key=_optional_str(row.get("study_key")),
            study_side_from_run=_optional_str(row.get("study_side_from_run")),
        )

    @property
    def decision(self) -> Decision | None:
        """The progression decision after the level, or None when the row has none."""
        return None if self.progression is None else self.progression.decision

    @property
    def plots_run(self) -> str | None:
        """The MLflow run holding this result's plots, trials and the chosen set's trades and
        equity: where its study side was logged in full."""
        return self.study_side_from_run or self.reused_from_run or self.mlflow_run_id

    @property
    def chosen_params(self) -> dict[str, Any] | None:
        """The chosen parameter set (the next level's warm start), or None."""
        return None if self.chosen is None else dict(self.chosen.params)


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)
