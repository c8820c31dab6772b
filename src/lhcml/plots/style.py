"""The lhcml plot style: mplhep's experiment styles, lhcml's label and colours.

The rcParams come from :mod:`mplhep.style` (``ATLAS`` by default; ``CMS`` or ``ROOT`` with
``LHCML_PLOT_STYLE`` or :func:`set_plot_style`), with a few lhcml overrides on top
(:data:`RC_OVERRIDES`: colour cycle, tick sizes, tight bounding box). The label in the top-left
corner is drawn by :func:`mplhep.label.exp_label` in the experiments' way (bold name, italic
status, like "ATLAS Simulation Internal") but reads :data:`EXPERIMENT_LABEL`: lhcml results never
use an experiment's name as a label.

Figures are built on :class:`matplotlib.figure.Figure` directly (no GUI backend is selected by
lhcml) and saved atomically. mplhep is imported only when a figure is drawn.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: the label in the top-left corner of every plot: bold name, then italic status
EXPERIMENT_NAME = "lhcml"
EXPERIMENT_STATUS = "open simulation"
EXPERIMENT_LABEL = f"{EXPERIMENT_NAME} {EXPERIMENT_STATUS}"

#: mplhep styles lhcml offers (``mplhep.style.<NAME>``); the first is the default
PLOT_STYLES = ("ATLAS", "CMS", "ROOT")
_plot_style: str | None = None  # set by set_plot_style(); None: LHCML_PLOT_STYLE or the default

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

#: lhcml's settings on top of the mplhep style (our choice: the colour cycle of COLOURS, equal x
#: and y tick lengths, a tight bounding box, sizes that fit the (7.5, 5.5) inch figures)
RC_OVERRIDES: dict[str, Any] = {
    "font.size": 12,
    "axes.labelsize": 13,
    "axes.titlesize": 13,
    "xtick.labelsize": 11,
    "ytick.labelsize": 11,
    "xtick.major.size": 7,
    "ytick.major.size": 7,
    "xtick.minor.size": 3.5,
    "ytick.minor.size": 3.5,
    "legend.fontsize": 10,
    "legend.handlelength": 1.6,
    "lines.linewidth": 1.6,
    "savefig.bbox": "tight",
    "figure.dpi": 100,
}


def set_plot_style(name: str | None) -> None:
    """Choose the mplhep style of all later figures (``None``: ``LHCML_PLOT_STYLE`` or ATLAS).

    Parameters
    ----------
    name : str | None
        One of :data:`PLOT_STYLES` (case-insensitive), or None.

    Raises
    ------
    ConfigError
        For a name that is not in :data:`PLOT_STYLES`.
    """
    global _plot_style
    _plot_style = None if name is None else _check_style(name, "set_plot_style")


@contextlib.contextmanager
def use_plot_style(name: str | None) -> Iterator[None]:
    """Draw the figures made inside the block in the mplhep style ``name`` (None: unchanged).

    Parameters
    ----------
    name : str | None
        One of :data:`PLOT_STYLES`, or None.
    """
    global _plot_style
    before = _plot_style
    if name is not None:
        set_plot_style(name)
    try:
        yield
    finally:
        _plot_style = before


def _check_style(name: str, where: str) -> str:
    from lhcml.errors import ConfigError

    key = str(name).strip().upper()
    if key not in PLOT_STYLES:
        raise ConfigError(
            f"unknown plot style '{name}' ({where}); valid: {', '.join(PLOT_STYLES)} (mplhep styles)"
        )
    return key


def plot_style_name() -> str:
    """The mplhep style in use: :func:`set_plot_style`, else ``LHCML_PLOT_STYLE``, else ATLAS."""
    if _plot_style is not None:
        return _plot_style
    env = os.environ.get("LHCML_PLOT_STYLE")
    return _check_style(env, "LHCML_PLOT_STYLE") if env else PLOT_STYLES[0]


def rc_params(name: str | None = None) -> dict[str, Any]:
    """The rcParams of a figure: ``mplhep.style.<name>`` updated with :data:`RC_OVERRIDES`.

    Parameters
    ----------
    name : str | None, optional
        An mplhep style of :data:`PLOT_STYLES`; default :func:`plot_style_name`.

    Returns
    -------
    dict[str, Any]
        The merged parameters (a new dictionary).
    """
    import mplhep
    from cycler import cycler

    key = plot_style_name() if name is None else _check_style(name, "rc_params")
    params: dict[str, Any] = {}
    base = getattr(mplhep.style, key)
    for part in base if isinstance(base, (list, tuple)) else [base]:
        params.update(part)
    params.update(RC_OVERRIDES)
    params["axes.prop_cycle"] = cycler(color=list(COLOURS))
    return params


@contextlib.contextmanager
def style(name: str | None = None) -> Iterator[None]:
    """Context manager applying :func:`rc_params` (the mplhep style plus lhcml's overrides).

    Parameters
    ----------
    name : str | None, optional
        An mplhep style of :data:`PLOT_STYLES`; default :func:`plot_style_name`.
    """
    import matplotlib as mpl

    with mpl.rc_context(rc_params(name)):
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


def add_experiment_label(ax: Axes, lines: Sequence[str] | str | None = None) -> None:
    """Write the lhcml label and extra lines (sample, cuts, WP) in the top-left corner.

    The label is :func:`mplhep.label.exp_label` with :data:`EXPERIMENT_NAME` in bold and
    :data:`EXPERIMENT_STATUS` in italics, inside the axes (``loc=1``), with no energy or luminosity
    on the right (lhcml does not know the sample's); the extra lines are placed under the label's
    box (offsets in points, so they never overlap it whatever the axes' height).

    Parameters
    ----------
    ax : Axes
        Target axis.
    lines : Sequence[str] | str | None, optional
        Extra text lines.
    """
    import mplhep

    extra = [lines] if isinstance(lines, str) else list(lines or [])
    # data=True: mplhep adds no "Simulation" prefix to the status text (ours says what it is)
    name, *_ = mplhep.label.exp_label(exp=EXPERIMENT_NAME, text=EXPERIMENT_STATUS, data=True, loc=1,
                                      rlabel="", ax=ax, fontsize=13)  # fmt: skip
    for i, line in enumerate(extra):
        ax.annotate(line, xy=(0.0, 0.0), xycoords=name, xytext=(0.0, -4.0 - 14.0 * i),
                    textcoords="offset points", fontsize=10, va="top", ha="left")  # fmt: skip


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
