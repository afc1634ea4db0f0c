"""A level's parameter-sensitivity surface as data: every trial's train Sharpe over the study's two
most important numeric parameters, the chosen set, and (under plateau selection) its
neighbourhood's validation Sharpe. ``plots.sensitivity_surface`` draws it; the tracking resource
writes it as ``sensitivity_surface.json`` beside the figure, so the plotted numbers can be read
and checked.

Which Sharpe where: the trials carry their **train** Sharpe (every trial has one; validation is
scored only for the Pareto candidates), the chosen set its train and **validation** Sharpe, the
plateau neighbours their validation Sharpe (what plateau selection ranked by). No test-period
number appears: the surface shows what steered the choice.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
import polars as pl

from ffe_dagster.core.reporting.figures import StudyPlot, figure, no_data
from ffe_dagster.core.study.selection import Candidate, PlateauNeighbourhood

_PREFIX = "param_"
SURFACE = "sensitivity_surface"


@dataclass(frozen=True, slots=True)
class SurfacePoint:
    """One point of the surface: a trial (``number``) or a plateau neighbour (``number`` None),
    its coordinates (``y`` None on a one-parameter surface) and its Sharpe."""

    number: int | None
    x: float
    y: float | None
    sharpe: float
    feasible: bool = True

    def to_json(self) -> dict[str, Any]:
        """The point as plain JSON values."""
        return {
            "number": self.number,
            "x": self.x,
            "y": self.y,
            "sharpe": self.sharpe,
            "feasible": self.feasible,
        }


@dataclass(frozen=True, slots=True)
class ChosenPoint:
    """The level's chosen set on the surface, with its train and validation Sharpe."""

    number: int
    x: float
    y: float | None
    train_sharpe: float
    validation_sharpe: float


@dataclass(frozen=True, slots=True)
class SensitivitySurface:
    """The surface of one study (see the module docstring)."""

    x_param: str
    y_param: str | None
    axes_by: str  # "importance", or "parameter order" when importance does not rank both axes
    importance: Mapping[str, float]  # of the axes, where Optuna reported it
    trials: tuple[SurfacePoint, ...]  # train Sharpe
    chosen: ChosenPoint | None
    plateau: tuple[SurfacePoint, ...] | None  # validation Sharpe; None without plateau selection
    plateau_fraction: float | None = None
    plateau_mean_sharpe: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The surface as plain JSON values (``sensitivity_surface.json``)."""
        chosen = self.chosen
        return {
            "sharpe": {
                "trials": "train",
                "chosen": "train and validation",
                "plateau": "validation",
            },
            "x": self.x_param,
            "y": self.y_param,
            "axes_by": self.axes_by,
            "importance": dict(self.importance),
            "trials": [p.to_json() for p in self.trials],
            "chosen": None
            if chosen is None
            else {
                "number": chosen.number,
                "x": chosen.x,
                "y": chosen.y,
                "train_sharpe": chosen.train_sharpe,
                "validation_sharpe": chosen.validation_sharpe,
            },
            "plateau": None
            if self.plateau is None
            else {
                "fraction": self.plateau_fraction,
                "mean_sharpe": self.plateau_mean_sharpe,
                "neighbours": [p.to_json() for p in self.plateau],
            },
        }


def surface_axes(trials: pl.DataFrame, importance: Mapping[str, float]) -> tuple[list[str], str]:
    """The numeric parameters of ``trials`` (``param_*`` columns), most important first (Optuna's
    importance, then table order for those it does not rank), and what ordered the first two."""
    numeric = [
        c.removeprefix(_PREFIX)
        for c, dtype in trials.schema.items()
        if c.startswith(_PREFIX) and dtype.is_numeric()
    ]
    ranked = sorted(numeric, key=lambda n: (-importance.get(n, -1.0), numeric.index(n)))
    by = "importance" if all(n in importance for n in ranked[:2]) and ranked else "parameter order"
    return ranked, by


def _coordinate(params: Mapping[str, Any], name: str | None) -> float | None:
    return None if name is None else float(params[name])


def sensitivity_surface_data(
    trials: pl.DataFrame,
    importance: Mapping[str, float],
    chosen: Candidate | None = None,
    plateau: Mapping[str, Any] | None = None,
) -> SensitivitySurface | None:
    """The surface of a study's trials table (``level_records.trials_table``), its importance,
    its chosen candidate and the level analysis's ``plateau`` entry
    (``selection.PlateauNeighbourhood.to_json``); None when no trial has a train Sharpe and a
    numeric parameter."""
    axes, by = surface_axes(trials, importance)
    if not axes or trials.is_empty() or "train_sharpe" not in trials.columns:
        return None
    x, y = axes[0], axes[1] if len(axes) > 1 else None
    columns = [f"{_PREFIX}{x}", *([f"{_PREFIX}{y}"] if y else [])]
    frame = trials.select(
        "number",
        *columns,
        pl.col("train_sharpe").cast(pl.Float64),
        (pl.col("feasible").fill_null(False) if "feasible" in trials.columns else pl.lit(True))
        .cast(pl.Boolean)
        .alias("feasible"),
    ).filter(pl.all_horizontal(pl.col([*columns, "train_sharpe"]).is_not_null()))
    frame = frame.filter(pl.col("train_sharpe").is_finite()).sort("number")
    if frame.is_empty():
        return None
    points = tuple(
        SurfacePoint(
            number=int(row["number"]),
            x=float(row[columns[0]]),
            y=float(row[columns[1]]) if y else None,
            sharpe=float(row["train_sharpe"]),
            feasible=bool(row["feasible"]),
        )
        for row in frame.iter_rows(named=True)
    )
    chosen_point = None
    if chosen is not None and x in chosen.params:
        chosen_point = ChosenPoint(
            number=chosen.number,
            x=float(chosen.params[x]),
            y=_coordinate(chosen.params, y),
            train_sharpe=float(chosen.train.get("sharpe", np.nan)),
            validation_sharpe=chosen.validation_sharpe,
        )
    neighbours = None
    read = PlateauNeighbourhood.from_json(plateau) if plateau else None
    if read is not None:
        neighbours = tuple(
            SurfacePoint(None, float(n.params[x]), _coordinate(n.params, y), n.validation_sharpe)
            for n in read.neighbours
        )
    return SensitivitySurface(
        x_param=x,
        y_param=y,
        axes_by=by,
        importance={n: float(importance[n]) for n in (x, y) if n is not None and n in importance},
        trials=points,
        chosen=chosen_point,
        plateau=neighbours,
        plateau_fraction=read.fraction if read else None,
        plateau_mean_sharpe=read.mean_sharpe if read else None,
    )


def sensitivity_surface(
    surface: SensitivitySurface | None, *, title: str = "parameter sensitivity"
) -> StudyPlot:
    """Every trial's train Sharpe over the two most important numeric parameters (color), the
    chosen set (a red star) and, under plateau selection, its neighbours labelled with their
    validation Sharpe; over one parameter when the study has only one (Sharpe on the y axis)."""
    if surface is None or not surface.trials:
        return no_data(SURFACE, title, "the study has no finished trial with a numeric parameter")
    two_d = surface.y_param is not None
    xs = np.array([p.x for p in surface.trials])
    ys = np.array([p.y if two_d else p.sharpe for p in surface.trials], dtype=np.float64)
    sharpe = np.array([p.sharpe for p in surface.trials])
    feasible = np.array([p.feasible for p in surface.trials], dtype=bool)
    y_label = surface.y_param or "train Sharpe"
    neighbours = surface.plateau or ()
    nx = [n.x for n in neighbours]
    ny = [float(n.sharpe if n.y is None else n.y) for n in neighbours]
    labels = [f"{n.sharpe:.2f}" for n in neighbours]
    chosen = surface.chosen
    cy = None if chosen is None else (chosen.y if two_d else chosen.train_sharpe)

    fig = figure((8.5, 5.5), right=0.2)
    ax = fig.add_subplot()
    lo, hi = float(sharpe.min()), max(float(sharpe.max()), float(sharpe.min()) + 1e-9)
    drawn = None
    for mask, marker, label in ((feasible, "o", "feasible"), (~feasible, "x", "infeasible")):
        points = ax.scatter(
            xs[mask],
            ys[mask],
            c=sharpe[mask],
            cmap="viridis",
            vmin=lo,
            vmax=hi,
            s=30,
            marker=marker,
            label=f"{label} trial (train Sharpe)",
        )
        drawn = drawn or points
    if drawn is not None and two_d:
        fig.colorbar(drawn, ax=ax, label="train Sharpe")
    if neighbours:
        ax.scatter(
            nx,
            ny,
            s=70,
            marker="D",
            facecolors="none",
            edgecolors="tab:orange",
            label="plateau neighbour (validation Sharpe)",
        )
        for px, py, text in zip(nx, ny, labels, strict=True):
            ax.annotate(text, (px, py), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if chosen is not None and cy is not None:
        ax.scatter(
            [chosen.x],
            [cy],
            s=220,
            marker="*",
            color="red",
            edgecolors="black",
            label=f"chosen (validation Sharpe {chosen.validation_sharpe:.2f})",
        )
    ax.set(xlabel=surface.x_param, ylabel=y_label, title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")

    pfig = go.Figure()
    for mask, name, symbol in ((feasible, "feasible", "circle"), (~feasible, "infeasible", "x")):
        pfig.add_trace(
            go.Scatter(
                x=xs[mask],
                y=ys[mask],
                mode="markers",
                name=f"{name} trial",
                marker={
                    "color": sharpe[mask],
                    "colorscale": "Viridis",
                    "cmin": lo,
                    "cmax": hi,
                    "symbol": symbol,
                    "size": 8,
                    "showscale": name == "feasible",
                    "colorbar": {"title": {"text": "train Sharpe"}},
                },
                text=[
                    f"trial {p.number}<br>train Sharpe {p.sharpe:.3f}"
                    for p, m in zip(surface.trials, mask, strict=True)
                    if m
                ],
                hoverinfo="text",
            )
        )
    if neighbours:
        pfig.add_trace(
            go.Scatter(
                x=nx,
                y=ny,
                mode="markers+text",
                name="plateau neighbour (validation Sharpe)",
                text=labels,
                textposition="top right",
                marker={"symbol": "diamond-open", "size": 11, "color": "orange"},
            )
        )
    if chosen is not None and cy is not None:
        pfig.add_trace(
            go.Scatter(
                x=[chosen.x],
                y=[cy],
                mode="markers",
                name="chosen",
                marker={"symbol": "star", "size": 18, "color": "red"},
                text=[f"trial {chosen.number}<br>validation Sharpe {chosen.validation_sharpe:.3f}"],
                hoverinfo="text",
            )
        )
    pfig.update_layout(title=title, xaxis_title=surface.x_param, yaxis_title=y_label)
    return StudyPlot(SURFACE, fig, pfig, data=surface)
