"""Writing a study's plots (``core.reporting.plots``) as files for the MLflow run's ``plots/``.

Each plot becomes ``<name>.png`` (its matplotlib figure, rendered by its Agg canvas) and
``<name>.html`` (its plotly figure), and ``<name>.json`` where the plot carries the numbers it
shows (``StudyPlot.data``, e.g. the parameter-sensitivity surface). HTML files load plotly.js
from its CDN by default (``include_plotlyjs="cdn"``): embedding it costs about 4.6 MB per file,
i.e. some 70 MB per cycle of four levels; pass ``True`` for files that open offline.
"""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from ffe_dagster.core.reporting.figures import StudyPlot

IncludePlotlyJs = bool | Literal["cdn"]

_DPI = 110
# zlib level 1 instead of Pillow's default 6: the flat-colored plots compress almost as well,
# and encoding takes a fraction of the time.
_PNG_OPTIONS = {"compress_level": 1}


def write_plots(
    plots: Sequence[StudyPlot], folder: Path, *, include_plotlyjs: IncludePlotlyJs = "cdn"
) -> list[Path]:
    """Write every plot into ``folder`` (created), PNG, HTML and (with data) JSON each; returns
    the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for plot in plots:
        png = folder / f"{plot.name}.png"
        # One draw per figure: its tight layout engine (``figures.figure``) fits it while it is
        # drawn, so no ``bbox_inches="tight"`` (a second draw of the whole figure).
        plot.static.savefig(png, dpi=_DPI, pil_kwargs=_PNG_OPTIONS)
        html = folder / f"{plot.name}.html"
        plot.interactive.write_html(html, include_plotlyjs=include_plotlyjs, full_html=True)
        paths += [png, html]
        if plot.data is not None:
            numbers = folder / f"{plot.name}.json"
            numbers.write_text(json.dumps(plot.data.to_json(), indent=1, allow_nan=True))
            paths.append(numbers)
    return paths
