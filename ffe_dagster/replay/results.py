"""The replay's report: equity of what the system said to trade against the baselines, the
gates' decisions over time, the deflated Sharpe of the system's returns; JSON, Markdown, PNG
plots and one MLflow run in experiment ``ffe_replay``.

Returns are judged on the bars after each cycle's time (the next period), which no choice of
that cycle saw. Rules, all on the same bars and costs, each instrument a ``INIT_CASH`` account
that restarts flat at every cycle:

- ``system``: per instrument what the export says to trade: the active regime's current set
  (else DEFAULT's) and the LIMITED set on trial for that regime, each with its share of the
  account (a LIMITED set ``limited.capital_fraction``, the current set the rest; 100 % without
  a LIMITED set), flat where there is none;
- ``no_gates``: re-optimizing every cycle without gates, the newest validation pick of the
  level that promotes the active regime;
- ``fixed``: the first cycle's ``no_gates`` picks, never changed;
- ``buy_and_hold``: every instrument bought at the first cycle and held (fee once);
- ``flat``: no position.
"""

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ffe_dagster.core.backtest.metrics import FloatArray
from ffe_dagster.core.backtest.reference import INIT_CASH, Direction
from ffe_dagster.core.replay.equity import (
    DAYS_PER_YEAR,
    Trading,
    buy_and_hold,
    portfolio_returns,
    summarize,
    trade_period,
    weighted_pnl,
)
from ffe_dagster.core.robustness.deflated_sharpe import deflated_sharpe_from_returns
from ffe_dagster.core.study.eras import LevelData
from ffe_dagster.replay.driver import period_ends
from ffe_dagster.resources.tracking import MlflowTrackingResource

RULES = ("system", "no_gates", "fixed", "buy_and_hold", "flat")
EXPERIMENT = "ffe_replay"


@dataclass(frozen=True, slots=True)
class RuleCurve:
    """One rule's daily returns over the replay and its trade count."""

    returns: FloatArray
    trades: int


def _days(start: datetime, end: datetime) -> list[str]:
    day, out = start.date(), []
    while day < end.date() or (day == end.date() and end.time() != datetime.min.time()):
        out.append(day.isoformat())
        day += timedelta(days=1)
    return out


def _legs(entry: Any) -> list[Mapping[str, Any]]:
    # A rule's entry for one instrument: None (flat), one set (all the capital) or the system's
    # legs, each with its share of the capital.
    if entry is None:
        return []
    if isinstance(entry, Mapping):
        return [{**entry, "share": 1.0}]
    return list(entry)


def _traded(
    sets_per_period: Sequence[Mapping[str, Any]],
    periods: Sequence[tuple[datetime, datetime]],
    history: LevelData,
    trading: Trading,
    days: Sequence[str],
) -> RuleCurve:
    pnl: list[Mapping[str, float]] = []
    trades = 0
    for sets, (start, end) in zip(sets_per_period, periods, strict=True):
        for instrument, entry in sets.items():
            if instrument not in history.bars:
                continue
            legs: list[tuple[Mapping[str, float], float]] = []
            for leg in _legs(entry):
                result = trade_period(
                    history.bars[instrument],
                    instrument,
                    leg["params"],
                    Direction(leg["direction"]),
                    trading,
                    start=start,
                    end=end,
                )
                legs.append((result.daily_pnl, float(leg["share"])))
                trades += result.trades.height
            pnl.append(weighted_pnl(legs))
    return RuleCurve(portfolio_returns(pnl, days, INIT_CASH * len(history.bars)), trades)


def rule_curves(
    records: Sequence[Mapping[str, Any]], history: LevelData, trading: Trading, end: datetime
) -> dict[str, RuleCurve]:
    """Every rule's daily returns from the first cycle to ``end`` (see the module docstring)."""
    periods = period_ends(records, end)
    days = _days(periods[0][0], end)
    capital = INIT_CASH * len(history.bars)
    hold = [
        buy_and_hold(f, trading.costs, start=periods[0][0], end=end) for f in history.bars.values()
    ]
    first = records[0]["no_gates"]
    return {
        "system": _traded([r["system"] for r in records], periods, history, trading, days),
        "no_gates": _traded([r["no_gates"] for r in records], periods, history, trading, days),
        "fixed": _traded([first] * len(records), periods, history, trading, days),
        "buy_and_hold": RuleCurve(portfolio_returns(hold, days, capital), len(hold)),
        "flat": RuleCurve(np.zeros(len(days), dtype=np.float64), 0),
    }


def decision_counts(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How often each gate decided what over the whole replay (``STAGE decision``)."""
    counts = Counter(f"{d['stage']} {d['decision']}" for r in records for d in r["decisions"])
    return dict(sorted(counts.items()))


def deflated_sharpe(curve: RuleCurve, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """DSR of the system's daily returns counting every trial of every cycle; when the
    system never held a position its returns are constant and the DSR is undefined (said so)."""
    sharpes = [s for r in records for s in r["trial_sharpes"] if np.isfinite(s)]
    try:
        dsr = deflated_sharpe_from_returns(
            curve.returns, trial_sharpes=sharpes, periods_per_year=DAYS_PER_YEAR
        )
    except ValueError as error:
        return {"dsr": None, "n_trials": len(sharpes), "why_not": str(error)}
    return {
        "dsr": dsr.dsr,
        "psr": dsr.psr,
        "sharpe": dsr.sharpe,
        "sr_star": dsr.sr_star,
        "n_trials": dsr.n_trials,
    }


def build_report(
    records: Sequence[Mapping[str, Any]],
    history: LevelData,
    trading: Trading,
    *,
    end: datetime,
    settings: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, RuleCurve]]:
    """The report as plain values, and the curves it summarizes."""
    curves = rule_curves(records, history, trading, end)
    per_cycle = [
        {
            "t": r["t"],
            "active": r["active"],
            "system": {
                k: " + ".join(
                    f"{leg['regime']} v{leg['version']} {leg['share']:.0%}" for leg in _legs(v)
                )
                or None
                for k, v in r["system"].items()
            },
            "levels_passed": [k for k, v in r["levels"].items() if v["passed"]],
            "decisions": Counter(f"{d['stage']} {d['decision']}" for d in r["decisions"]),
            "changes": r["changes"],
        }
        for r in records
    ]
    report = {
        "settings": dict(settings),
        "cycles": len(records),
        "trials": sum(len(r["trial_sharpes"]) for r in records),
        "rules": {name: summarize(c.returns, c.trades).as_dict() for name, c in curves.items()},
        "decisions": decision_counts(records),
        "deflated_sharpe": deflated_sharpe(curves["system"], records),
        "per_cycle": per_cycle,
    }
    return report, curves


SHARED_RULES = ("buy_and_hold", "flat")  # baselines no selection rule changes


def combine_selections(
    by_selection: Mapping[str, tuple[Mapping[str, Any], Mapping[str, RuleCurve]]],
) -> tuple[dict[str, Any], dict[str, RuleCurve]]:
    """One report of replays that differ only in the curriculum's selection rule: the rules
    that depend on the choice (system, no_gates, fixed) once per selection, ``name (selection)``,
    the baselines once; the gates' decisions, the deflated Sharpe and the cycles per selection."""
    first_report, first_curves = next(iter(by_selection.values()))
    curves: dict[str, RuleCurve] = {}
    rules: dict[str, Any] = {}
    for selection, (report, own) in by_selection.items():
        for name, curve in own.items():
            if name not in SHARED_RULES:
                curves[f"{name} ({selection})"] = curve
                rules[f"{name} ({selection})"] = report["rules"][name]
    for name in SHARED_RULES:
        curves[name] = first_curves[name]
        rules[name] = first_report["rules"][name]
    settings = {k: v for k, v in first_report["settings"].items() if k != "seconds"}
    combined = {
        "settings": settings,
        "cycles": first_report["cycles"],
        "rules": rules,
        "selections": {
            selection: {
                "seconds": report["settings"]["seconds"],
                "trials": report["trials"],
                "decisions": report["decisions"],
                "deflated_sharpe": report["deflated_sharpe"],
                "per_cycle": report["per_cycle"],
            }
            for selection, (report, _) in by_selection.items()
        },
    }
    return combined, curves


def _selection_lines(selection: str, part: Mapping[str, Any]) -> list[str]:
    dsr = part["deflated_sharpe"]
    value = f"{dsr['dsr']:.3f}" if dsr["dsr"] is not None else f"undefined ({dsr['why_not']})"
    lines = [
        "",
        f"## Selection `{selection}`",
        "",
        f"{part['trials']} trials in all; {part['seconds']:.0f} s. Deflated Sharpe of the "
        f"system's daily returns over {dsr['n_trials']} trials: {value}",
        "",
        "| gate decision | count |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in part["decisions"].items()]
    lines += ["", "| cycle | levels passed | system trades | decisions |", "|---|---|---|---|"]
    for c in part["per_cycle"]:
        trades = ", ".join(f"{k}: {v or 'flat'}" for k, v in c["system"].items())
        decisions = ", ".join(f"{k} x{v}" for k, v in c["decisions"].items())
        lines.append(f"| {c['t'][:10]} | {c['levels_passed'] or '-'} | {trades} | {decisions} |")
    return lines


def markdown(report: Mapping[str, Any]) -> str:
    """The combined report's tables (``combine_selections``) in Markdown."""
    s = report["settings"]
    lines = [
        "# Replay",
        "",
        f"{s['start']} .. {s['end']}, {s['every']} cycles ({report['cycles']}), trial profile "
        f"`{s['trial_profile']}`, test era {s['test_days']} days per cycle, selection rules "
        f"{', '.join(f'`{k}`' for k in report['selections'])}; load `{s['load']}` at the end.",
        "",
        "| rule | total return % | Sharpe | Sortino | max drawdown % | trades |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in report["rules"].items():
        lines.append(
            f"| {name} | {m['total_return_pct']:.3f} | {m['sharpe']:.2f} | {m['sortino']:.2f} | "
            f"{m['max_drawdown_pct']:.3f} | {int(m['trades'])} |"
        )
    for selection, part in report["selections"].items():
        lines += _selection_lines(selection, part)
    return "\n".join(lines) + "\n"


def _plot(curves: Mapping[str, RuleCurve], path: Path, *, drawdown: bool) -> None:
    figure = Figure(figsize=(9, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, curve in curves.items():
        equity = np.cumprod(1.0 + curve.returns)
        values = (1.0 - equity / np.maximum.accumulate(equity)) * -100.0 if drawdown else equity
        axes.plot(values, label=name)
    axes.set_xlabel("day of the replay")
    axes.set_ylabel("drawdown %" if drawdown else "equity (start = 1)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)


def write_report(
    report: Mapping[str, Any],
    curves: Mapping[str, RuleCurve],
    out_dir: Path,
    tracking: MlflowTrackingResource | None,
) -> dict[str, Path]:
    """``replay.json``, ``replay.md``, ``replay_equity.png`` and ``replay_drawdown.png`` in
    ``out_dir``; with ``tracking``, one MLflow run in experiment ``ffe_replay`` holding the
    rules' metrics and these files. Returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "replay.json",
        "md": out_dir / "replay.md",
        "equity": out_dir / "replay_equity.png",
        "drawdown": out_dir / "replay_drawdown.png",
    }
    paths["json"].write_text(json.dumps(report, indent=1, default=str))
    paths["md"].write_text(markdown(report))
    _plot(curves, paths["equity"], drawdown=False)
    _plot(curves, paths["drawdown"], drawdown=True)
    if tracking is not None:
        client = tracking.client()
        run = client.create_run(
            tracking.experiment_id(client), run_name=f"replay {report['settings']['start']}"
        )
        for name, values in report["rules"].items():
            key = name.replace(" (", "_").replace(")", "")  # MLflow names: no parentheses
            for metric, value in values.items():
                client.log_metric(run.info.run_id, f"{key}_{metric}", float(value))
        for key, value in report["settings"].items():
            client.log_param(run.info.run_id, key, str(value))
        for path in paths.values():
            client.log_artifact(run.info.run_id, str(path))
        client.set_terminated(run.info.run_id)
    return paths
