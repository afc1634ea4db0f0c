"""One replayed cycle at time t: the levels, the promotion step, the export, on bars before t.

Everything here calls what the assets call: ``run_levels`` (the level assets' chain),
``regime_candidates`` and ``run_promotion_cycle`` (the ``promoted_parameters`` asset) against a
real registry in the replay's folder, ``confirmed_regime`` for each instrument's active set and
``export_current`` for what the trading system would read. LIMITED versions are paper-traded
with their capital share and reported in the live-results format (``read_live_results``).

The record's ``system`` says, per instrument, what the export tells the trading system to trade
from ``t``: a list of legs, each a set with its share of the instrument's capital
(``capital_shares``: a LIMITED set ``limited.capital_fraction``, the current set the rest, all
of it without a LIMITED set); an empty list is flat.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from optuna.storages import BaseStorage

from ffe_dagster.core.backtest.reference import Direction
from ffe_dagster.core.promotion.config import PromotionConfig, PromotionRegime, Stage
from ffe_dagster.core.regimes.detection import RegimeConfig, confirmed_regime
from ffe_dagster.core.replay.equity import Trading, capital_shares, live_rows, trade_period
from ffe_dagster.core.study.eras import LevelData
from ffe_dagster.core.study.level_result import LevelResult
from ffe_dagster.core.study.level_specs import CurriculumSpec
from ffe_dagster.promotion.candidates import regime_candidates
from ffe_dagster.promotion.export import export_current
from ffe_dagster.promotion.live_results import read_live_results
from ffe_dagster.promotion.state_machine import Market, run_promotion_cycle, stage_since
from ffe_dagster.replay.level_chain import run_levels
from ffe_dagster.resources.registry import ParameterRegistryResource

TRIGGER = "schedule"  # the replay stands in for the cycle schedule; run ids say "replay-"


@dataclass(frozen=True, slots=True)
class CycleInputs:
    """What every replayed cycle shares."""

    registry: ParameterRegistryResource
    storage: BaseStorage
    trial_profile: str
    promotion: PromotionConfig
    trading: Trading
    bar_period: timedelta
    folder: Path


def _live_results(inputs: CycleInputs, data: LevelData, t: datetime) -> pl.DataFrame:
    """The trades the trading system would have reported by ``t``: each LIMITED version with its
    capital share since it entered LIMITED, each current version with the rest since it became
    current, all paper-traded on the bars before ``t`` and written in the live-results format."""
    frames: list[pl.DataFrame] = []
    fraction = inputs.promotion.limited.capital_fraction
    for regime in PromotionRegime:
        rows = [r for r in inputs.registry.in_flight(regime.value) if r.stage is Stage.LIMITED]
        current = inputs.registry.current(regime.value)
        rest, share = capital_shares(
            current=current is not None, limited=bool(rows), fraction=fraction
        )
        plays = [(r, share) for r in rows] + ([(current, rest)] if current else [])
        for row, fraction in plays:
            since = stage_since(row)
            for instrument, frame in data.bars.items():
                result = trade_period(
                    frame,
                    instrument,
                    row.params,
                    Direction(row.direction),
                    inputs.trading,
                    start=since,
                    end=t,
                )
                frames.append(
                    live_rows(
                        result,
                        regime=regime.value,
                        version=row.version,
                        capital_fraction=fraction,
                    )
                )
    folder = inputs.folder / "live"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.parquet"):
        old.unlink()
    if frames:
        pl.concat(frames).write_parquet(folder / "reported.parquet")
    return read_live_results(folder)


def _leg(
    regime: str, row: Mapping[str, Any], directions: Mapping[int, Direction], share: float
) -> dict[str, Any]:
    return {
        "regime": regime,
        "version": row["version"],
        "stage": row["stage"],
        "params": row["params"],
        "direction": row.get("direction") or directions[int(row["level"])].value,
        "share": share,
    }


def _sets(
    payload: Mapping[str, Any], directions: Mapping[int, Direction], fraction: float
) -> dict[str, list[dict[str, Any]]]:
    """Per instrument, what the export tells the trading system to trade: the current set of the
    regime it uses (its confirmed regime's, else DEFAULT's) and the LIMITED set on trial for its
    confirmed regime (DEFAULT's when none is confirmed), each with its share of the capital."""
    out: dict[str, list[dict[str, Any]]] = {}
    for instrument, entry in payload["active"].items():
        current = payload["regimes"].get(entry["use"])
        trial_regime = entry["regime"] or PromotionRegime.DEFAULT.value
        limited = payload["limited"].get(trial_regime)
        rest, share = capital_shares(
            current=current is not None, limited=limited is not None, fraction=fraction
        )
        legs = [_leg(entry["use"], current, directions, rest)] if current else []
        if limited is not None:
            legs.append(_leg(trial_regime, limited, directions, share))
        out[instrument] = legs
    return out


def _no_gate_sets(
    curriculum: CurriculumSpec,
    results: Mapping[int, LevelResult],
    active: Mapping[str, str | None],
) -> dict[str, Any]:
    """Per instrument, the newest validation pick of the level promoting its active regime
    (DEFAULT's level when none is confirmed or that level chose nothing): re-optimizing every
    cycle without any gate."""
    level_of = {g: spec for spec in curriculum.levels for g in spec.promotes}
    out: dict[str, Any] = {}
    for instrument, regime in active.items():
        spec = level_of.get(regime or PromotionRegime.DEFAULT.value)
        chosen = results[spec.level].chosen if spec else None
        if chosen is None:
            spec = level_of.get(PromotionRegime.DEFAULT.value)
            chosen = results[spec.level].chosen if spec else None
        out[instrument] = (
            None
            if chosen is None or spec is None
            else {"params": dict(chosen.params), "direction": spec.direction.value}
        )
    return out


def replay_cycle(
    inputs: CycleInputs, curriculum: CurriculumSpec, data: LevelData, t: datetime
) -> dict[str, Any]:
    """Run the cycle at ``t`` on ``data`` (bars before ``t`` only) and return its record: the
    levels' verdicts and picks, every promotion decision, the active regimes, and what the
    system (after its gates) and the gate-less rule would trade from ``t``."""
    chain = run_levels(curriculum, data, storage=inputs.storage, trial_profile=inputs.trial_profile)
    market = Market(
        bars=data.bars,
        periods_per_year=data.periods_per_year,
        strategy=inputs.trading.strategy,
        costs=inputs.trading.costs,
        bar_period=inputs.bar_period,
    )
    directions = {spec.level: spec.direction for spec in curriculum.levels}
    run_id = f"replay-{t:%Y%m%dT%H%M}"
    report = run_promotion_cycle(
        inputs.registry,
        regimes=regime_candidates(curriculum, chain.results.get),
        market=market,
        live=_live_results(inputs, data, t),
        now=t,
        config=inputs.promotion,
        level_directions=directions,
        trigger=TRIGGER,
        run_id=run_id,
    )
    active = {
        k: (None if (r := confirmed_regime(v, RegimeConfig())) is None else r.value)
        for k, v in data.regimes.items()
    }
    payload = export_current(
        inputs.registry,
        inputs.folder / "export" / "current.json",
        run_id,
        inputs.promotion.limited,
        report.changes,
        active,
    )
    return {
        "t": t.isoformat(),
        "levels": {
            str(level): {
                "passed": r.passed,
                "skipped": r.skipped,
                "n_trials": r.n_trials,
                "chosen": r.chosen_params,
                "decision": r.decision.value if r.decision else None,
            }
            for level, r in chain.results.items()
        },
        "trial_sharpes": list(chain.trial_sharpes),
        "decisions": [
            {
                "regime": row.regime,
                "version": row.version,
                "stage": str(row.stage),
                "decision": row.decision,
                "reason": row.reason,
            }
            for row in report.rows
        ],
        "changes": [
            {"regime": c.regime, "action": c.action, "version": c.version, "previous": c.previous}
            for c in report.changes
        ],
        "active": active,
        "system": _sets(payload, directions, inputs.promotion.limited.capital_fraction),
        "no_gates": _no_gate_sets(curriculum, chain.results, active),
    }
