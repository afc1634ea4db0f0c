"""What a person sees on the terminal: progress bars while a cycle works, a short summary after.

Dagster's own events (DEBUG and up) always go to the instance, where the UI shows them; the
terminal gets the console logger only at ``console_log_level`` (WARNING unless ``-v``). Progress
bars are tqdm bars on stderr, shown only when stderr is a terminal (``disable=None``), so runs
under ``dagster dev``, pytest or a pipe write no bar characters into their logs.
"""

import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from ffe_dagster.core.study.level_result import LevelResult

SUMMARY_MAX_LINES = 60
_SHOWN = ("sharpe", "win_rate_pct", "max_drawdown_pct", "n_trades")


def console_run_config(verbose: bool) -> dict[str, Any]:
    """The run config that sets the console logger's level of an in-process run."""
    level = "DEBUG" if verbose else "WARNING"
    return {"loggers": {"console": {"config": {"log_level": level}}}}


def progress_bar(total: int, desc: str, unit: str) -> tqdm:
    """A tqdm bar on stderr, silent when stderr is not a terminal."""
    return tqdm(total=total, desc=desc, unit=unit, disable=None, file=sys.stderr, leave=True)


@dataclass(slots=True)
class IngestProgress:
    """Progress of ``raw_bars``: UTC days covered (fetched or skipped as complete) of the run's
    windows, bars stored, bars per second."""

    total_days: int
    bar: tqdm | None = None
    days: dict[str, int] = field(default_factory=dict)
    bars: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.bar = progress_bar(self.total_days, "ingest", "day")

    def report(self, instrument: str, days_done: int, bars_stored: int) -> None:
        """``instrument`` has covered ``days_done`` days and stored ``bars_stored`` bars."""
        self.days[instrument] = days_done
        self.bars[instrument] = bars_stored
        if self.bar is None:
            return
        bars = sum(self.bars.values())
        rate = bars / max(time.monotonic() - self.started, 1e-9)
        self.bar.set_postfix_str(f"{instrument}, {bars:,} bars, {rate:,.0f} bars/s", refresh=False)
        self.bar.update(sum(self.days.values()) - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass(slots=True)
class TrialProgress:
    """Progress of one level's study: trials done of the target, best feasible train Sharpe
    so far (tqdm shows trials per second)."""

    label: str
    total: int
    bar: tqdm | None = None
    best: float = -math.inf

    def __post_init__(self) -> None:
        self.bar = progress_bar(self.total, self.label, "trial")

    def advance(self, done: int, metrics: Mapping[str, float], feasible: bool) -> None:
        """Trial number ``done`` (1-based) finished with train ``metrics``."""
        sharpe = float(metrics.get("sharpe", -math.inf))
        if feasible and sharpe > self.best:
            self.best = sharpe
        if self.bar is not None:
            if self.bar.total is not None and done > self.bar.total:
                self.bar.total = done  # a repeated level runs more trials than first planned
            best = f"{self.best:.2f}" if math.isfinite(self.best) else "none feasible"
            self.bar.set_postfix_str(f"best feasible Sharpe {best}")
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass(frozen=True, slots=True)
class RegimeLine:
    """Where one regime stands after the cycle and why (the registry's words)."""

    regime: str
    stage: str
    reason: str


@dataclass(frozen=True, slots=True)
class CycleFacts:
    """Everything the summary prints, gathered by the CLI after the cycle."""

    seconds: float
    trial_profile: str
    step_seconds: Mapping[str, float]
    levels: Sequence[LevelResult]
    regimes: Sequence[RegimeLine]
    active: Mapping[str, Mapping[str, Any]]
    run_ids: Mapping[str, str]
    export_path: str
    ui_url: str = "http://127.0.0.1:3000"
    mlflow_url: str = "http://127.0.0.1:5000"


def _metrics(values: Mapping[str, Any] | None) -> str:
    if not values:
        return "n/a"
    sharpe = values.get("sharpe")
    win = values.get("win_rate_pct")
    dd = values.get("max_drawdown_pct")
    trades = values.get("n_trades")
    parts = [
        f"Sharpe {sharpe:.2f}" if sharpe is not None else "Sharpe n/a",
        f"win {win:.1f}%" if win is not None else "win n/a",
        f"maxDD {dd:.1f}%" if dd is not None else "maxDD n/a",
        f"{int(trades)} trades" if trades is not None else "trades n/a",
    ]
    return ", ".join(parts)


def _params(params: Mapping[str, Any] | None) -> str:
    if not params:
        return "none chosen"
    return ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def _level_lines(result: LevelResult) -> list[str]:
    head = f"L{result.level} {result.name}"
    if result.analysis.get("skipped") or result.skipped:
        reasons = (result.progression.reasons if result.progression else ()) or ("skipped",)
        return [f"{head}: skipped ({reasons[0]})"]
    chosen = result.chosen
    failed = [c.name for c in result.criteria if not c.passed]
    verdict = "PASSED" if result.passed else "FAILED " + (", ".join(failed) or "")
    trials = f"{result.n_trials} trials ({result.new_trials} new)"
    return [
        f"{head}: {trials}, {result.feasible_trials} feasible; {verdict.strip()}",
        f"  chosen: {_params(chosen.params if chosen else None)}",
        f"  validation: {_metrics(chosen.validation if chosen else None)}",
        f"  test:       {_metrics(result.test)}",
    ]


def cycle_summary(facts: CycleFacts) -> list[str]:
    """The end-of-cycle summary, at most ``SUMMARY_MAX_LINES`` lines: per level the trials run,
    the chosen parameters, validation and test metrics and the verdict with the failed criteria
    named; per regime the stage reached and why; per instrument the set to use; where to look.
    """
    steps = ", ".join(f"{k} {v:.1f}s" for k, v in facts.step_seconds.items())
    lines = [
        f"cycle finished in {facts.seconds:.1f}s (trial profile '{facts.trial_profile}'): {steps}",
        "",
        "levels (train picks, validation chooses, test judges):",
    ]
    for result in facts.levels:
        lines.extend(_level_lines(result))
    lines += ["", "regimes (stage reached, and why):"]
    lines.extend(f"  {r.regime}: {r.stage}: {r.reason}" for r in facts.regimes)
    lines += ["", "instruments (set the trading system uses):"]
    for instrument, entry in facts.active.items():
        why = f" ({entry['reason']})" if entry.get("reason") else ""
        regime = entry.get("regime") or "none confirmed"
        lines.append(f"  {instrument}: regime {regime}, use {entry.get('use')}{why}")
    mlflow = ", ".join(f"L{r.level} {r.mlflow_run_id}" for r in facts.levels)
    lines += [
        "",
        f"export: {facts.export_path}",
        f"Dagster runs: {', '.join(f'{k} {v}' for k, v in facts.run_ids.items())}",
        f"  UI: `make dev`, {facts.ui_url} (every event, DEBUG included, is in the instance)",
        f"MLflow runs: {mlflow}",
        f"  UI: `make mlflow`, {facts.mlflow_url}",
    ]
    return _clip(lines)


def _clip(lines: list[str]) -> list[str]:
    # Long text (a reason naming many criteria) is shortened, and the line count is capped,
    # so the summary always fits a screen; the full text is in the UI and the registry.
    clipped = [line if len(line) <= 160 else line[:157] + "..." for line in lines]
    if len(clipped) > SUMMARY_MAX_LINES:
        clipped = [*clipped[: SUMMARY_MAX_LINES - 1], "... (more in the Dagster UI)"]
    return clipped
