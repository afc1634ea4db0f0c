"""What every plot of ``core.reporting`` is: a ``StudyPlot`` (a matplotlib and a plotly figure,
and optionally the numbers it shows), and the two helpers the plots share: a figure attached to
an Agg canvas, and the "no data" plot that says why a plot is empty.

Static figures are ``matplotlib.figure.Figure`` objects attached to an Agg canvas, never made
through ``pyplot`` or ``matplotlib.use``: pyplot keeps global figure state and picks a GUI
backend, and ``use`` would switch the backend for the whole process; neither is wanted in a worker.
"""

from dataclasses import dataclass
from typing import Any, Protocol

import plotly.graph_objects as go
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


class PlotData(Protocol):
    """Numbers a plot shows, written beside its figures as ``<name>.json``."""

    def to_json(self) -> dict[str, Any]:
        """The numbers as plain JSON values."""
        ...


@dataclass(frozen=True, slots=True)
class StudyPlot:
    """One plot of a study: ``name`` (the file stem it is written under, e.g. ``pareto_front``),
    its static matplotlib figure, its interactive plotly figure and, where they are worth a file
    of their own, the numbers it shows (``data``)."""

    name: str
    static: Figure
    interactive: go.Figure
    data: PlotData | None = None


def no_data(stem: str, title: str, reason: str) -> StudyPlot:
    """A plot named ``stem`` that says "no data" and ``reason`` in both figures."""
    fig = figure((7, 3))
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, f"no data: {reason}", ha="center", va="center", wrap=True)
    pfig = go.Figure()
    pfig.update_layout(
        title=title,
        xaxis={"visible": False},
        yaxis={"visible": False},
        annotations=[
            {"text": f"no data: {reason}", "showarrow": False, "xref": "paper", "yref": "paper"}
        ],
    )
    return StudyPlot(stem, fig, pfig)


def figure(
    figsize: tuple[float, float], *, left: float = 0.85, right: float = 0.3, **kwargs: Any
) -> Figure:
    """A matplotlib figure of ``figsize`` inches attached to an Agg canvas (PNG rendering
    without pyplot), its subplots inside fixed margins: ``left`` and ``right`` in inches (the
    room for tick labels and axis label, or a colorbar's), 0.6 below and 0.45 above."""
    # Fixed margins rather than a layout pass: a layout engine or ``bbox_inches="tight"`` makes
    # ``savefig`` draw every figure twice (once to measure its texts, once to render), about
    # half of its time in a cProfile; the plots' labels are short and known, so fixed room fits.
    width, height = figsize
    fig = Figure(figsize=figsize, **kwargs)
    fig.subplots_adjust(
        left=left / width, right=1 - right / width, bottom=0.6 / height, top=1 - 0.45 / height
    )
    FigureCanvasAgg(fig)  # attaches itself to the figure
    return fig
