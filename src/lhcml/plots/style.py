"""The lhcml plot style: an mplhep/puma-like look without requiring mplhep.

Figures are built on :class:`matplotlib.figure.Figure` directly (no ``pyplot``, so no GUI backend
is ever imported) and saved atomically. Every plot carries the label :data:`EXPERIMENT_LABEL`;
lhcml results never use an experiment's name as a label.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: the label in the top-left corner of every plot
EXPERIMENT_LABEL = "lhcml open simulation"

#: colour cycle (puma/matplotlib "tab10" order)
COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))

RC_PARAMS: dict[str, Any] = {
    "font.family": "sans-serif",
    "font.size": 12,
    "axes.labelsize": 13,
    "axes.titlesize": 13,
    "axes.linewidth": 1.0,
    "axes.labelpad": 6,
    "xtick.direction": "in",
    "ytick.direction": "in",
    "xtick.top": True,
    "ytick.right": True,
    "xtick.minor.visible": True,
    "ytick.minor.visible": True,
    "xtick.major.size": 7,
    "ytick.major.size": 7,
    "xtick.minor.size": 3.5,
    "ytick.minor.size": 3.5,
    "xtick.labelsize": 11,
    "ytick.labelsize": 11,
    "legend.frameon": False,
    "legend.fontsize": 10,
    "legend.handlelength": 1.6,
    "lines.linewidth": 1.6,
    "savefig.bbox": "tight",
    "figure.dpi": 100,
}


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Context manager applying :data:`RC_PARAMS`."""
    import matplotlib as mpl

    with mpl.rc_context(RC_PARAMS):
        yield


def colour(i: int) -> str:
    """The i-th colour of the cycle."""
    return COLOURS[i % len(COLOURS)]


def linestyle(i: int) -> Any:
    """The i-th line style."""
    return LINESTYLES[i % len(LINESTYLES)]


def new_figure(
    figsize: tuple[float, float] = (7.0, 5.5), height_ratios: Sequence[float] | None = None
) -> tuple[Figure, list[Axes]]:
    """A figure with one main axis and optional ratio panels sharing x.

    Parameters
    ----------
    figsize : tuple[float, float], optional
        Size in inches.
    height_ratios : Sequence[float] | None, optional
        Relative heights of vertically stacked axes (first = main), e.g. ``(3, 1, 1)``.

    Returns
    -------
    tuple[Figure, list[Axes]]
        The figure and its axes, top to bottom.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    ratios = list(height_ratios) if height_ratios else [1.0]
    gs = fig.add_gridspec(len(ratios), 1, height_ratios=ratios, hspace=0.06)
    axes = [fig.add_subplot(gs[0])]
    for i in range(1, len(ratios)):
        axes.append(fig.add_subplot(gs[i], sharex=axes[0]))
    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
    return fig, axes


def add_experiment_label(ax: Axes, lines: Sequence[str] | str | None = None, y: float = 0.95) -> None:
    """Write the lhcml label and extra lines (sample, cuts, WP) in the top-left corner.

    Parameters
    ----------
    ax : Axes
        Target axis.
    lines : Sequence[str] | str | None, optional
        Extra text lines.
    y : float, optional
        Vertical position of the first line (axes fraction).
    """
    extra = [lines] if isinstance(lines, str) else list(lines or [])
    ax.text(
        0.04, y, EXPERIMENT_LABEL, transform=ax.transAxes, fontsize=13, fontweight="bold",
        fontstyle="italic", va="top",
    )
    for i, line in enumerate(extra):
        ax.text(0.04, y - 0.06 * (i + 1), line, transform=ax.transAxes, fontsize=10, va="top")


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Save a figure atomically (temporary file in the same folder, then rename).

    Parameters
    ----------
    fig : Figure
        The figure.
    path : str | Path
        Output path; its suffix sets the format (png, pdf, svg).
    dpi : int, optional
        Resolution for raster formats.

    Returns
    -------
    Path
        The written path.
    """
    from lhcml.atomic import atomic_path

    path = Path(path)
    with atomic_path(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    return path


class PlotBase:
    """Common base of the ``add -> draw -> save`` plot objects.

    Subclasses collect data with ``add(...)`` (no drawing), build the figure in ``draw()`` and
    write it with ``save(path)`` (which draws if needed).

    Parameters
    ----------
    xlabel, ylabel : str, optional
        Axis labels.
    label_lines : Sequence[str] | None, optional
        Extra lines under the lhcml label (sample, selection). The label itself is always
        :data:`EXPERIMENT_LABEL`.
    figsize : tuple[float, float], optional
        Figure size.
    logy : bool, optional
        Log-scale main y axis.
    """

    def __init__(
        self,
        xlabel: str = "",
        ylabel: str = "",
        label_lines: Sequence[str] | None = None,
        figsize: tuple[float, float] = (7.5, 5.5),
        logy: bool = False,
    ) -> None:
        self.xlabel = xlabel
        self.ylabel = ylabel
        self.label_lines = list(label_lines or [])
        self.figsize = figsize
        self.logy = logy
        self.fig: Figure | None = None
        self.axes: list[Axes] = []

    def draw(self) -> Figure:  # pragma: no cover - abstract
        """Build the figure from the added data."""
        raise NotImplementedError

    def save(self, path: str | Path, dpi: int = 120) -> Path:
        """Draw (if not done) and save atomically.

        Parameters
        ----------
        path : str | Path
            Output file.
        dpi : int, optional
            Resolution.

        Returns
        -------
        Path
            The written file.
        """
        if self.fig is None:
            self.draw()
        assert self.fig is not None
        with style():
            return save_figure(self.fig, path, dpi)
