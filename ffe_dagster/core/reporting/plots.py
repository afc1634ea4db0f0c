"""Plots of a level study, each drawn twice: a matplotlib figure (for a PNG) and a plotly figure
(for an interactive HTML page).

Pure: the functions take plain data and return figures (``StudyPlot``); writing them is the
tracking resource's job (``ffe_dagster.resources.tracking_plots.write_plots``), and nothing here
knows about files, Dagster or MLflow. Inputs:

- the trials table of ``ffe_dagster.core.study.level_records.trials_table`` (``number``,
  ``param_*``, ``train_*`` metrics, ``feasible``, ``pareto``),
- Optuna's parameter importance (``name -> importance``),
- the chosen set's equity frame (``instrument``, ``ts``, ``equity``, ``drawdown_pct``),
- the chosen candidate and, under plateau selection, its neighbourhood on validation (for the
  parameter-sensitivity surface, whose numbers ``core.reporting.sensitivity`` computes and the
  plot carries as ``StudyPlot.data``).

An empty input (no trial, no importance, no chosen set) still gives both figures, saying "no
data" and why, so every run carries the same artifact names and the MLflow UI shows the reason
instead of a missing file.

Static figures are drawn without ``pyplot`` (``figures.figure``).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from ffe_dagster.core.reporting.figures import StudyPlot, figure, no_data
from ffe_dagster.core.reporting.sensitivity import sensitivity_surface, sensitivity_surface_data
from ffe_dagster.core.study.selection import Candidate

HISTORY = "optimization_history"
IMPORTANCE = "parameter_importance"
PARETO = "pareto_front"
EQUITY = "equity_drawdown"

MAX_EQUITY_POINTS = 4000  # per instrument, for display only; the full curve is a table artifact
_SEGMENT_GAP_FACTOR = 50.0  # a time step this many times the median one starts a new segment


@dataclass(frozen=True, slots=True)
class StudyPlotData:
    """Everything the plots of one level study need."""

    trials: pl.DataFrame
    importance: Mapping[str, float] = field(default_factory=dict)
    equity: pl.DataFrame | None = None
    title: str = ""
    importance_note: str = ""  # why importance is empty, e.g. Optuna's error message
    chosen: Candidate | None = None
    plateau: Mapping[str, Any] | None = None  # the level analysis's "plateau" entry, if any


def study_plots(data: StudyPlotData) -> tuple[StudyPlot, ...]:
    """All five plots of a study: optimization history, parameter importance, Pareto front,
    equity and drawdown of the chosen set, parameter-sensitivity surface (in that order)."""
    prefix = f"{data.title}: " if data.title else ""
    return (
        optimization_history(data.trials, title=f"{prefix}optimization history"),
        parameter_importance(
            data.importance,
            title=f"{prefix}parameter importance (train Sharpe)",
            note=data.importance_note,
        ),
        pareto_front(data.trials, title=f"{prefix}Pareto front"),
        equity_drawdown(data.equity, title=f"{prefix}equity and drawdown of the chosen set"),
        sensitivity_surface(
            sensitivity_surface_data(data.trials, data.importance, data.chosen, data.plateau),
            title=f"{prefix}parameter sensitivity",
        ),
    )


def optimization_history(trials: pl.DataFrame, *, title: str = "optimization history") -> StudyPlot:
    """Train Sharpe of every trial by trial number, feasible and infeasible trials marked apart,
    with the best feasible Sharpe so far (convergence) and the best of all trials so far."""
    if trials.is_empty() or "train_sharpe" not in trials.columns:
        return no_data(HISTORY, title, "the study has no finished trial")
    frame = trials.sort("number")
    number = frame["number"].to_numpy().astype(np.float64)
    sharpe = _floats(frame["train_sharpe"])
    feasible = _feasible(frame)
    best_feasible = _running_max(np.where(feasible, sharpe, np.nan))
    best_any = _running_max(sharpe)
    hover = _hover(frame)

    fig = figure((9, 4.5))
    ax = fig.add_subplot()
    ax.scatter(number[feasible], sharpe[feasible], s=18, color="tab:green", label="feasible trial")
    ax.scatter(
        number[~feasible], sharpe[~feasible], s=18, color="0.6", marker="x", label="infeasible"
    )
    ax.step(number, best_any, where="post", color="0.4", linestyle=":", label="best so far (all)")
    ax.step(number, best_feasible, where="post", color="tab:blue", label="best feasible so far")
    ax.set(xlabel="trial", ylabel="train Sharpe", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")

    pfig = go.Figure()
    for mask, name, color, symbol in (
        (feasible, "feasible trial", "green", "circle"),
        (~feasible, "infeasible", "grey", "x"),
    ):
        pfig.add_trace(
            go.Scatter(
                x=number[mask],
                y=sharpe[mask],
                mode="markers",
                name=name,
                marker={"color": color, "symbol": symbol, "size": 7},
                text=[hover[i] for i in np.flatnonzero(mask)],
                hoverinfo="text",
            )
        )
    for values, name, dash in (
        (best_any, "best so far (all)", "dot"),
        (best_feasible, "best feasible so far", "solid"),
    ):
        pfig.add_trace(
            go.Scatter(
                x=number, y=values, mode="lines", name=name, line={"shape": "hv", "dash": dash}
            )
        )
    pfig.update_layout(title=title, xaxis_title="trial", yaxis_title="train Sharpe")
    return StudyPlot(HISTORY, fig, pfig)


def parameter_importance(
    importance: Mapping[str, float], *, title: str = "parameter importance", note: str = ""
) -> StudyPlot:
    """Horizontal bars of each parameter's importance, the most important on top."""
    if not importance:
        reason = note or "Optuna reported no importance (fewer than 4 trials or no variation)"
        return no_data(IMPORTANCE, title, reason)
    ranked = sorted(importance.items(), key=lambda kv: kv[1])  # barh draws bottom-up
    names = [k for k, _ in ranked]
    values = [float(v) for _, v in ranked]

    # Room on the left for the longest name: about 0.08 inch per character of 10-point text,
    # at most half the figure (a longer name is clipped rather than leaving no room for bars).
    left = min(0.3 + 0.08 * max(len(n) for n in names), 4.0)
    fig = figure((8, 0.45 * len(names) + 1.6), left=left)
    ax = fig.add_subplot()
    ax.barh(names, values, color="tab:blue")
    ax.set(xlabel="importance (share of train Sharpe variance)", title=title)
    ax.grid(axis="x", alpha=0.3)

    pfig = go.Figure(go.Bar(x=values, y=names, orientation="h"))
    pfig.update_layout(title=title, xaxis_title="importance")
    return StudyPlot(IMPORTANCE, fig, pfig)


def pareto_front(trials: pl.DataFrame, *, title: str = "Pareto front") -> StudyPlot:
    """Train Sharpe against max drawdown for every trial, colored by win rate; the feasible
    Pareto front of the three objectives (Sharpe, win rate, drawdown) is ringed in red, so a
    front point may sit inside the 2-D cloud when its win rate earns its place."""
    needed = {"train_sharpe", "train_max_drawdown_pct", "train_win_rate_pct"}
    if trials.is_empty() or not needed <= set(trials.columns):
        return no_data(PARETO, title, "the study has no finished trial")
    sharpe = _floats(trials["train_sharpe"])
    drawdown = _floats(trials["train_max_drawdown_pct"])
    win = _floats(trials["train_win_rate_pct"])
    feasible = _feasible(trials)
    front = (
        trials["pareto"].fill_null(False).to_numpy().astype(bool)
        if "pareto" in trials.columns
        else np.zeros(trials.height, dtype=bool)
    )
    hover = _hover(trials)
    finite = win[np.isfinite(win)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 100.0)

    fig = figure((8.5, 5), right=0.2)  # the colorbar's room is taken from the axes
    ax = fig.add_subplot()
    vmax = max(high, low + 1e-9)  # a constant win rate still needs a non-empty color range
    points = None
    for mask, marker, label in ((feasible, "o", "feasible"), (~feasible, "x", "infeasible")):
        drawn = ax.scatter(
            drawdown[mask],
            sharpe[mask],
            c=win[mask],
            cmap="viridis",
            vmin=low,
            vmax=vmax,
            s=28,
            marker=marker,
            label=label,
        )
        if points is None:
            points = drawn
    ax.scatter(
        drawdown[front],
        sharpe[front],
        s=110,
        facecolors="none",
        edgecolors="red",
        linewidths=1.5,
        label=f"Pareto front ({int(front.sum())})",
    )
    if points is not None:
        fig.colorbar(points, ax=ax, label="train win rate %")
    ax.set(xlabel="train max drawdown %", ylabel="train Sharpe", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")

    pfig = go.Figure()
    for mask, name, symbol in ((feasible, "feasible", "circle"), (~feasible, "infeasible", "x")):
        pfig.add_trace(
            go.Scatter(
                x=drawdown[mask],
                y=sharpe[mask],
                mode="markers",
                name=name,
                marker={
                    "color": win[mask],
                    "colorscale": "Viridis",
                    "cmin": low,
                    "cmax": high,
                    "symbol": symbol,
                    "size": 8,
                    "showscale": name == "feasible",
                    "colorbar": {"title": {"text": "win rate %"}},
                },
                text=[hover[i] for i in np.flatnonzero(mask)],
                hoverinfo="text",
            )
        )
    pfig.add_trace(
        go.Scatter(
            x=drawdown[front],
            y=sharpe[front],
            mode="markers",
            name="Pareto front",
            marker={"size": 15, "color": "rgba(0,0,0,0)", "line": {"color": "red", "width": 2}},
            text=[hover[i] for i in np.flatnonzero(front)],
            hoverinfo="text",
        )
    )
    pfig.update_layout(title=title, xaxis_title="train max drawdown %", yaxis_title="train Sharpe")
    return StudyPlot(PARETO, fig, pfig)


def equity_drawdown(
    equity: pl.DataFrame | None,
    *,
    title: str = "equity and drawdown",
    max_points: int = MAX_EQUITY_POINTS,
) -> StudyPlot:
    """Equity (top) and drawdown in percent (bottom) of the chosen set, one line per instrument.

    A level's windows of one instrument are separate backtests that each start from the initial
    cash, so the line is broken where the time step jumps rather than drawn across the gap. Long
    curves are thinned to ``max_points`` per instrument keeping each bucket's deepest drawdown.
    """
    needed = {"instrument", "ts", "equity", "drawdown_pct"}
    if equity is None or equity.is_empty() or not needed <= set(equity.columns):
        return no_data(EQUITY, title, "no parameter set was chosen")
    curves = {
        str(name): _thin(_with_gaps(part), max_points)
        for name, part in sorted(
            ((str(k[0]), v) for k, v in equity.partition_by("instrument", as_dict=True).items()),
        )
    }

    fig = figure((10, 6))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    for name, (ts, eq, dd) in curves.items():
        top.plot(ts, eq, linewidth=0.9, label=name)
        bottom.plot(ts, -dd, linewidth=0.9, label=name)
    top.set(ylabel="equity", title=title)
    bottom.set(ylabel="drawdown %", xlabel="time (UTC)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize="small")
    fig.autofmt_xdate()

    pfig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.65, 0.35])
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
    for i, (name, (stamps, eq, dd)) in enumerate(curves.items()):
        color = palette[i % len(palette)]
        ts = _plotly_stamps(stamps)
        pfig.add_trace(
            go.Scatter(
                x=ts, y=eq, mode="lines", name=name, legendgroup=name, line={"color": color}
            ),
            row=1,
            col=1,
        )
        pfig.add_trace(
            go.Scatter(
                x=ts,
                y=-dd,
                mode="lines",
                name=f"{name} drawdown",
                legendgroup=name,
                showlegend=False,
                line={"color": color},
            ),
            row=2,
            col=1,
        )
    pfig.update_layout(title=title)
    pfig.update_yaxes(title_text="equity", row=1, col=1)
    pfig.update_yaxes(title_text="drawdown %", row=2, col=1)
    return StudyPlot(EQUITY, fig, pfig)


FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def _floats(series: pl.Series) -> FloatArray:
    return series.cast(pl.Float64).fill_null(np.nan).to_numpy().astype(np.float64)


def _feasible(frame: pl.DataFrame) -> BoolArray:
    if "feasible" not in frame.columns:
        return np.ones(frame.height, dtype=bool)
    return frame["feasible"].fill_null(False).to_numpy().astype(bool)


def _running_max(values: FloatArray) -> FloatArray:
    # NaN until the first real value, then the best so far (np.fmax ignores NaN).
    return np.fmax.accumulate(values) if values.size else values


def _hover(frame: pl.DataFrame) -> list[str]:
    # One line per trial: its number, train metrics and parameters.
    shown = [c for c in frame.columns if c.startswith(("param_", "train_"))]
    rows: list[str] = []
    for row in frame.select(["number", *shown]).iter_rows(named=True):
        parts = [f"trial {row['number']}"]
        for name in shown:
            value = row[name]
            text = f"{value:.4g}" if isinstance(value, float) else str(value)
            parts.append(f"{name}: {text}")
        rows.append("<br>".join(parts))
    return rows


def _plotly_stamps(stamps: npt.NDArray[np.datetime64]) -> npt.NDArray[np.object_]:
    # ISO strings with None at the breaks (plotly.js reads no NaT). Strings rather than datetime
    # objects: plotly deep-copies an object array item by item when a trace is added and when
    # the page is written; copying datetimes was most of this plot's build time (cProfile),
    # while a string is returned as is.
    text = np.datetime_as_string(stamps, unit="s").astype(object)
    text[np.isnat(stamps)] = None
    return text


def _with_gaps(part: pl.DataFrame) -> tuple[npt.NDArray[np.datetime64], FloatArray, FloatArray]:
    # Insert a NaT/NaN row wherever a new backtest segment starts, so lines do not bridge gaps.
    ts = part["ts"].to_numpy().astype("datetime64[us]")
    eq = _floats(part["equity"])
    dd = _floats(part["drawdown_pct"])
    if ts.size < 3:
        return ts, eq, dd
    steps = np.diff(ts).astype(np.float64)
    forward = steps[steps > 0]
    median = float(np.median(forward)) if forward.size else 1.0
    # Rows keep the frame's order (one backtest segment after another): a step back in time or
    # a jump far beyond the bar interval is where the next segment starts.
    breaks = np.flatnonzero((steps <= 0) | (steps > _SEGMENT_GAP_FACTOR * max(median, 1.0))) + 1
    if breaks.size == 0:
        return ts, eq, dd
    return (
        np.insert(ts, breaks, np.datetime64("NaT", "us")),
        np.insert(eq, breaks, np.nan),
        np.insert(dd, breaks, np.nan),
    )


def _thin(
    curve: tuple[npt.NDArray[np.datetime64], FloatArray, FloatArray], max_points: int
) -> tuple[npt.NDArray[np.datetime64], FloatArray, FloatArray]:
    # Keep the first row of each bucket and the row of its deepest drawdown, so the worst
    # drawdown of the curve always survives the thinning, and every segment break (NaN).
    # Vectorized over buckets: a Python loop over them was this plot's other big cost (cProfile).
    ts, eq, dd = curve
    if ts.size <= max_points:
        return curve
    bucket = int(np.ceil(ts.size / max(max_points // 2, 1)))
    rows = -(-ts.size // bucket)
    padded = np.full(rows * bucket, -np.inf)
    padded[: ts.size] = np.where(np.isnan(dd), -np.inf, dd)  # NaN never the deepest
    windows = padded.reshape(rows, bucket)
    starts = np.arange(rows, dtype=np.int64) * bucket
    has_value = np.isfinite(windows).any(axis=1)
    deepest = starts[has_value] + np.argmax(windows[has_value], axis=1)
    idx = np.unique(np.concatenate([starts, deepest, np.flatnonzero(np.isnan(dd))]))
    return ts[idx], eq[idx], dd[idx]
