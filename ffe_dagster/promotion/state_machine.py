"""The promotion state machine per regime (docs/spec.md §5), one step of every cycle.

Per regime, in this order:

1. a version in LIMITED is judged on the live results the trading system reported
   (``live_results_dir``) against the current version's results over the same hours;
2. a version in WARM is judged by paper trading on the bars that arrived after it was made,
   against the current parameters on the same bars; it enters LIMITED when that stage is free;
3. when nothing is in flight, the level's candidates face the COLD gate in validation order
   and the first to pass enters WARM (a rejection is stored with its reason). A level that did
   not pass its pass criteria sends none (``blocked``, stored with the failed criteria, unless
   the level sets ``promote_without_pass``). COLD judges each parameter set once, and only on
   bars no earlier COLD test of the regime used (``cold_bars_used``): with too few of those it
   waits;
4. after that, the current (FULL) version is checked against the safety limits on the bars
   since its promotion (and on its live results, when the trading system reports any); a
   breach rolls it back to the previous version automatically, trigger ``automatic-rollback``.

Every decision goes to the registry with its checks, metrics, trigger and run id, and the
current parameters per regime (plus the LIMITED ones, with their capital share) are exported
atomically as JSON for the trading system. The registry is any ``PromotionRegistry``
(``core/promotion/registry_protocol.py``): the SQL resource in a run, an in-memory one in tests.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from ffe_dagster.core.backtest.reference import CostModel, Direction
from ffe_dagster.core.backtest.strategies import EntryStrategy
from ffe_dagster.core.promotion.checks import GateDecision
from ffe_dagster.core.promotion.config import Outcome, PromotionConfig, PromotionRegime, Stage
from ffe_dagster.core.promotion.gates import choose_for_regime, cold_gate, limited_gate, warm_gate
from ffe_dagster.core.promotion.performance import (
    Performance,
    live_performance,
    paper_performance,
    watermark,
)
from ffe_dagster.core.promotion.records import (
    Action,
    Marks,
    ParameterVersion,
    RegimeAction,
    Trigger,
    VersionStatus,
)
from ffe_dagster.core.promotion.registry_protocol import PromotionRegistry
from ffe_dagster.core.promotion.safety import safety_gate
from ffe_dagster.core.study.evaluation import Params
from ffe_dagster.core.study.selection import Candidate
from ffe_dagster.promotion.decisions import CurrentChange, CycleReport

WARMUP_BARS = 400
AUTOMATIC_ROLLBACK = Trigger.AUTOMATIC_ROLLBACK
_YEAR = timedelta(days=365)


@dataclass(frozen=True, slots=True)
class RegimeCandidates:
    """A regime's candidates from the level that promotes it."""

    regime: PromotionRegime
    level: int
    direction: Direction
    candidates: Sequence[Candidate]
    source_run_id: str | None = None
    blocked: str | None = None  # why the level's verdict keeps its candidates out of COLD


@dataclass(frozen=True, slots=True)
class Market:
    """The validated bars and how to trade them; paper trading runs here."""

    bars: Mapping[str, pl.DataFrame]
    periods_per_year: Mapping[str, float]
    strategy: EntryStrategy
    costs: CostModel
    bar_period: timedelta

    def paper(self, params: Params, direction: Direction, since: Marks) -> Performance:
        """``params`` traded on the bars after ``since``."""
        return paper_performance(
            self.bars,
            params,
            since=since,
            strategy=self.strategy,
            direction=direction,
            costs=self.costs,
            periods_per_year=self.periods_per_year,
            warmup_bars=WARMUP_BARS,
        )

    def last_days(self, days: int) -> dict[str, datetime]:
        """Marks that leave the last ``days`` days of every instrument."""
        return {k: v - timedelta(days=days) for k, v in watermark(self.bars).items()}


@dataclass(frozen=True, slots=True)
class _Cycle:
    """Everything one cycle shares, so the steps below take few arguments."""

    registry: PromotionRegistry
    market: Market
    live: pl.DataFrame
    now: datetime
    marks: Marks
    config: PromotionConfig
    level_directions: Mapping[int, Direction]
    trigger: str
    run_id: str | None
    report: CycleReport

    def direction(self, row: ParameterVersion) -> Direction:
        if row.direction is not None:
            return row.direction
        if row.level not in self.level_directions:
            raise ValueError(
                f"{row.regime} v{row.version} has no direction and level {row.level} is not "
                "in the curriculum any more"
            )
        return self.level_directions[row.level]

    def live_perf(self, regime: str, version: int, since: datetime) -> Performance:
        return live_performance(
            self.live,
            regime=regime,
            version=version,
            since=since,
            until=self.now,
            bar_period=self.market.bar_period,
            periods_per_year=_YEAR / self.market.bar_period,
        )

    def record(self, row: ParameterVersion, decision: GateDecision, action: Action) -> None:
        """Store a WAIT or FAIL decision about an in-flight version."""
        store = self.registry.wait if action is Action.WAIT else self.registry.reject
        store(
            regime=row.regime,
            version=row.version,
            reason=decision.reason,
            metrics={**decision.metrics, **_prefixed("current_", decision.baseline)},
            checks=decision.checks_as_dicts(),
            trigger=self.trigger,
            run_id=self.run_id,
            at=self.now,
        )
        self.report.add(row.regime, row.version, row.stage, action, decision.reason)

    def advance(
        self,
        row: ParameterVersion,
        decision: GateDecision,
        to_stage: Stage,
        data_marks: Marks | None = None,
    ) -> None:
        """Store that an in-flight version passed its gate and moves up to ``to_stage``
        (``data_marks``: the bars seen when it became current, for FULL)."""
        self.registry.advance(
            regime=row.regime,
            version=row.version,
            to_stage=to_stage,
            reason=decision.reason,
            metrics={**decision.metrics, **_prefixed("current_", decision.baseline)},
            checks=decision.checks_as_dicts(),
            trigger=self.trigger,
            run_id=self.run_id,
            data_marks=data_marks,
            at=self.now,
        )


def _prefixed(prefix: str, values: Mapping[str, float]) -> dict[str, float]:
    return {prefix + k: v for k, v in values.items()}


def stage_since(row: ParameterVersion) -> datetime:
    """When a version entered its stage (its creation for rows of the first registry schema)."""
    return row.since


def _reference_sharpe(row: ParameterVersion) -> float:
    """What a version was expected to do after COLD: its COLD Sharpe."""
    if "sharpe" not in row.metrics:
        raise ValueError(f"{row.regime} v{row.version} has no COLD Sharpe in its metrics")
    return float(row.metrics["sharpe"])


def run_promotion_cycle(
    registry: PromotionRegistry,
    *,
    regimes: Sequence[RegimeCandidates],
    market: Market,
    live: pl.DataFrame,
    now: datetime,
    config: PromotionConfig,
    level_directions: Mapping[int, Direction],
    trigger: str,
    run_id: str | None,
) -> CycleReport:
    """One promotion cycle over every regime (see the module docstring for the order)."""
    cycle = _Cycle(
        registry=registry,
        market=market,
        live=live,
        now=now,
        marks=watermark(market.bars),
        config=config,
        level_directions=level_directions,
        trigger=trigger,
        run_id=run_id,
        report=CycleReport(),
    )
    by_regime = {r.regime: r for r in regimes}
    for regime in PromotionRegime:
        for row in registry.in_flight(regime.value):
            if row.stage is Stage.LIMITED:
                _judge_limited(cycle, row)
        for row in registry.in_flight(regime.value):
            if row.stage is Stage.WARM:
                _judge_warm(cycle, row)
        if regime in by_regime:
            _take_candidate(cycle, by_regime[regime])
    for regime in PromotionRegime:
        _watch_current(cycle, regime.value)
    return cycle.report


def _judge_limited(cycle: _Cycle, row: ParameterVersion) -> None:
    regime, version = row.regime, row.version
    current = cycle.registry.current(regime)
    since = row.since
    decision = limited_gate(
        cycle.live_perf(regime, version, since),
        None if current is None else cycle.live_perf(regime, current.version, since),
        reference_sharpe=_reference_sharpe(row),
        config=cycle.config.limited,
        limits=cycle.config.safety,
    )
    if decision.outcome is Outcome.WAIT:
        cycle.record(row, decision, Action.WAIT)
    elif decision.outcome is Outcome.FAIL:
        cycle.record(row, decision, Action.REJECT)
    elif not _held(cycle, row, decision):
        cycle.advance(row, decision, Stage.FULL, data_marks=cycle.marks)
        previous = None if current is None else current.version
        cycle.report.add(regime, version, Stage.LIMITED, Action.PROMOTE, decision.reason)
        cycle.report.changes.append(
            CurrentChange(regime, Action.PROMOTE, version, previous, decision.reason, cycle.trigger)
        )


def _judge_warm(cycle: _Cycle, row: ParameterVersion) -> None:
    regime, version = row.regime, row.version
    current = cycle.registry.current(regime)
    since = row.data_marks
    if since is None:
        raise ValueError(f"{regime} v{version} is at WARM but has no data marks to trade from")
    decision = warm_gate(
        cycle.market.paper(row.params, cycle.direction(row), since),
        None
        if current is None
        else cycle.market.paper(current.params, cycle.direction(current), since),
        reference_sharpe=_reference_sharpe(row),
        config=cycle.config.warm,
        limits=cycle.config.safety,
    )
    if decision.outcome is not Outcome.PASS:
        action = Action.WAIT if decision.outcome is Outcome.WAIT else Action.REJECT
        cycle.record(row, decision, action)
        return
    busy = [r for r in cycle.registry.in_flight(regime) if r.stage is Stage.LIMITED]
    if busy:
        # One live trial per regime at a time: the trading system runs one LIMITED set.
        reason = f"{decision.reason}; waits for v{busy[0].version} to leave LIMITED"
        cycle.registry.wait(
            regime=regime,
            version=version,
            reason=reason,
            metrics=decision.metrics,
            checks=decision.checks_as_dicts(),
            trigger=cycle.trigger,
            run_id=cycle.run_id,
            at=cycle.now,
        )
        cycle.report.add(regime, version, Stage.WARM, Action.WAIT, reason)
        return
    if _held(cycle, row, decision):
        return
    cycle.advance(row, decision, Stage.LIMITED)
    cycle.report.add(regime, version, Stage.WARM, Action.ADVANCE, decision.reason)


def _note(cycle: _Cycle, inputs: RegimeCandidates, action: RegimeAction, reason: str) -> None:
    """Store and report a decision about the regime that creates no version."""
    regime = inputs.regime.value
    cycle.registry.note_decision(
        regime=regime,
        level=inputs.level,
        stage=Stage.COLD,
        action=action,
        reason=reason,
        trigger=cycle.trigger,
        run_id=cycle.run_id,
        at=cycle.now,
    )
    cycle.report.add(regime, None, Stage.COLD, action, reason)


def _unused_since(cycle: _Cycle, regime: str) -> tuple[dict[str, datetime], str | None]:
    """Per instrument, the last bar an earlier COLD test of ``regime`` used, and why COLD must
    wait (fewer unused days than its shortest window on some instrument), or None."""
    used = cycle.registry.cold_bars_used(regime)
    need = timedelta(days=cycle.config.cold.window_days[0])
    short = [
        f"{k} has {(cycle.marks[k] - mark) / timedelta(days=1):.1f} of {need.days} days after "
        f"{mark:%Y-%m-%d %H:%M}"
        for k, mark in sorted(used.items())
        if k in cycle.marks and cycle.marks[k] - mark < need
    ]
    if not short:
        return used, None
    return used, "waits for bars no earlier COLD test used: " + "; ".join(short)


def _held(cycle: _Cycle, row: ParameterVersion, decision: GateDecision) -> bool:
    """Whether a version that passed its gate must wait because required notifications are
    undeliverable (nobody would learn that live capital moved); the wait is recorded."""
    hold = cycle.registry.delivery_hold(cycle.now)
    if hold is None:
        return False
    reason = f"{decision.reason}; {hold}"
    cycle.registry.wait(
        regime=row.regime,
        version=row.version,
        reason=reason,
        metrics={**decision.metrics, **_prefixed("current_", decision.baseline)},
        checks=decision.checks_as_dicts(),
        trigger=cycle.trigger,
        run_id=cycle.run_id,
        at=cycle.now,
    )
    cycle.report.add(row.regime, row.version, row.stage, Action.WAIT, reason)
    return True


def _take_candidate(cycle: _Cycle, inputs: RegimeCandidates) -> None:
    regime = inputs.regime.value
    if inputs.blocked is not None:
        _note(cycle, inputs, RegimeAction.BLOCKED, inputs.blocked)
        current = cycle.registry.current(regime)
        version = None if current is None else current.version
        cycle.report.changes.append(
            CurrentChange(
                regime, RegimeAction.BLOCKED, version, version, inputs.blocked, cycle.trigger
            )
        )
        return
    flying = cycle.registry.in_flight(regime)
    if flying:
        busy = ", ".join(f"v{r.version} at {r.stage}" for r in flying)
        _note(cycle, inputs, RegimeAction.SKIP, f"{busy} in flight; new candidates wait")
        return
    # Every set the regime ever stored (current, superseded, rolled back, rejected at any stage,
    # COLD included) is not tried again: a set judged once on the hold-out has had its test.
    known: list[Mapping[str, object]] = [v.params for v in cycle.registry.history(regime)]
    known += cycle.registry.cold_tested(regime)
    fresh = [c for c in inputs.candidates if dict(c.params) not in known]
    if not fresh:
        why = (
            f"level {inputs.level} produced no candidate"
            if not inputs.candidates
            else f"every candidate of level {inputs.level} was judged by an earlier cycle"
        )
        _note(cycle, inputs, RegimeAction.SKIP, why)
        return
    used, wait = _unused_since(cycle, regime)
    if wait is not None:
        _note(cycle, inputs, RegimeAction.WAIT, wait)
        return
    decisions: list[GateDecision] = []

    def since(days: int) -> dict[str, datetime]:
        # The COLD window, cut after the bars earlier COLD tests of this regime used.
        window = cycle.market.last_days(days)
        return {k: max(v, used[k]) if k in used else v for k, v in window.items()}

    def gate(index: int, params: Params) -> GateDecision:
        decision = cold_gate(
            lambda days: cycle.market.paper(params, inputs.direction, since(days)),
            cycle.config.cold,
            reference_sharpe=fresh[index].validation_sharpe,
            limits=cycle.config.safety,
        )
        decisions.append(decision)
        return decision

    choice = choose_for_regime(inputs.regime, inputs.level, [c.params for c in fresh], gate)
    index = choice.index if choice.index is not None else len(decisions) - 1
    decision = decisions[index]
    version = cycle.registry.add_candidate(
        regime=regime,
        level=inputs.level,
        direction=inputs.direction.value,
        params=fresh[index].params,
        metrics=decision.metrics,
        passed=choice.params is not None,
        reason=choice.reason,
        checks=decision.checks_as_dicts(),
        trigger=cycle.trigger,
        run_id=cycle.run_id,
        data_marks=cycle.marks,
        source_run_id=inputs.source_run_id,
        candidate_number=fresh[index].number,
        at=cycle.now,
    )
    longest = int(max(d.metrics["window_days"] for d in decisions))
    cycle.registry.note_cold_bars(
        regime,
        {k: (start, cycle.marks[k]) for k, start in since(longest).items() if k in cycle.marks},
        tested=[fresh[i].params for i in range(len(decisions))],
        version=version,
        run_id=cycle.run_id,
        at=cycle.now,
    )
    outcome = Action.ADVANCE if choice.params is not None else Action.REJECT
    cycle.report.add(regime, version, Stage.COLD, outcome, choice.reason)


def _watch_current(cycle: _Cycle, regime: str) -> None:
    current = cycle.registry.current(regime)
    if current is None:
        return
    version = current.version
    reference = _reference_sharpe(current)
    limits = cycle.config.safety
    # (prefix of its metrics in the audit trail, decision)
    decisions: list[tuple[str, GateDecision]] = []
    if current.stage_marks is None:
        # Restored by a rollback, or promoted before the watch existed: paper trading is
        # watched from the bars known now.
        cycle.registry.start_watch(regime, version, cycle.marks)
        cycle.report.add(regime, version, Stage.FULL, "watch", "safety watch starts at these bars")
    else:
        paper = cycle.market.paper(current.params, cycle.direction(current), current.stage_marks)
        window = "the bars since its promotion"
        decisions.append(
            ("", safety_gate(paper, reference_sharpe=reference, limits=limits, window=window))
        )
    reported = cycle.live.filter((pl.col("regime") == regime) & (pl.col("version") == version))
    since = current.since
    if reported.height and cycle.now > since:
        live = cycle.live_perf(regime, version, since)
        window = "its live results"
        decisions.append(
            ("live_", safety_gate(live, reference_sharpe=reference, limits=limits, window=window))
        )
    breaches = [(prefix, d) for prefix, d in decisions if d.outcome is Outcome.FAIL]
    if not breaches:
        for _, d in decisions:
            cycle.report.add(regime, version, Stage.FULL, f"watch: {d.outcome}", d.reason)
        return
    reason = "safety breach: " + " | ".join(d.reason for _, d in breaches)
    metrics = {prefix + k: v for prefix, d in breaches for k, v in d.metrics.items()}
    checks = [
        {**c, "name": prefix + str(c["name"])}
        for prefix, d in breaches
        for c in d.checks_as_dicts()
    ]
    earlier = [
        v
        for v in cycle.registry.history(regime)
        if v.status is VersionStatus.SUPERSEDED and v.version < version
    ]
    take_back = cycle.registry.rollback if earlier else cycle.registry.suspend
    back = take_back(
        regime,
        reason=reason,
        trigger=AUTOMATIC_ROLLBACK,
        run_id=cycle.run_id,
        metrics=metrics,
        checks=checks,
        at=cycle.now,
    )
    restored, action = (back, Action.ROLLBACK) if earlier else (None, Action.SUSPEND)
    cycle.report.add(regime, version, Stage.FULL, action, reason)
    cycle.report.changes.append(
        CurrentChange(regime, action, restored, version, reason, AUTOMATIC_ROLLBACK)
    )
