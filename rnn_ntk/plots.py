"""One figure style for every rnn_ntk figure, and saving as PNG + PDF.

Figures are drawn from stored results only (never by training); experiment modules call
:func:`new_figure` and :func:`save` so that the gallery looks like one piece of work.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["STYLE", "new_figure", "width_colors", "save"]

STYLE: dict[str, Any] = {
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.4,
    "lines.markersize": 4,
    "axes.prop_cycle": matplotlib.cycler(color=plt.get_cmap("viridis")(
        [0.0, 0.2, 0.4, 0.6, 0.8, 0.95]).tolist()),
}


def new_figure(ncols: int = 1, nrows: int = 1, *, width: float = 3.4, height: float = 2.8,
               **kw: Any):
    """A figure with ``nrows x ncols`` axes in the house style; returns (fig, axes array)."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows),
                                 squeeze=False, **kw)
    return fig, axes


def width_colors(n: int) -> list:
    """n colours from light to dark, for curves ordered by width (or any increasing axis)."""
    return [plt.get_cmap("viridis")(0.9 * i / max(n - 1, 1)) for i in range(n)]


def save(fig, stem: str | Path) -> list[Path]:
    """Write ``stem``.png and ``stem``.pdf (directories created; same figure, same bytes) and
    close the figure."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    with plt.rc_context(STYLE):
        fig.tight_layout()
        for ext in ("png", "pdf"):
            path = stem.with_suffix("." + ext)
            # no creation date in PDFs, so redrawing the same results gives the same bytes
            fig.savefig(path, metadata={"CreationDate": None} if ext == "pdf" else None)
            paths.append(path)
    plt.close(fig)
    return paths
