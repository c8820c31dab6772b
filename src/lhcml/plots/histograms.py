"""Normalised histograms (discriminant per class with working-point lines; pass/fail background
mass distributions for mass sculpting), ``add -> draw -> save``.

Bin contents and their variances come from :mod:`hist` (boost-histogram) with weighted storage
(:func:`fill_histogram`): sum of weights and sum of squared weights per bin, under- and overflow
kept in the flow bins and folded into the edge bins for drawing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lhcml.plots.style import PlotBase, add_experiment_label, colour, new_figure, style

if TYPE_CHECKING:  # pragma: no cover
    import hist


def fill_histogram(
    values: np.ndarray, edges: np.ndarray | Sequence[float], weights: np.ndarray | None = None
) -> hist.Hist:
    """A weighted histogram (``hist.Hist`` with ``Weight`` storage) on the given bin edges.

    Each bin holds the sum of weights (``.values()``) and the sum of squared weights
    (``.variances()``, the statistical variance of a weighted count). Entries below the first or
    at/above the last edge go to the under/overflow bins (``flow=True``); NaN values are dropped
    (as ``np.histogram`` does), ±inf go to the flow bins.

    Parameters
    ----------
    values : np.ndarray
        Data.
    edges : np.ndarray | Sequence[float]
        Increasing bin edges.
    weights : np.ndarray | None, optional
        Per-entry weights (default 1).

    Returns
    -------
    hist.Hist
        The filled histogram.
    """
    import hist

    v = np.asarray(values, dtype=np.float64)
    keep = ~np.isnan(v)
    h = hist.Hist(hist.axis.Variable(np.asarray(edges, dtype=np.float64)), storage=hist.storage.Weight())
    if weights is None:
        h.fill(v[keep])
    else:
        h.fill(v[keep], weight=np.asarray(weights, dtype=np.float64)[keep])
    return h


def folded_contents(h: hist.Hist) -> tuple[np.ndarray, np.ndarray]:
    """Bin contents and variances of a 1-D weighted histogram with under/overflow added to the
    first/last bin (how the plots show entries outside the range)."""
    cont = h.values(flow=True).astype(np.float64)
    var = h.variances(flow=True).astype(np.float64)
    for a in (cont, var):
        a[1] += a[0]
        a[-2] += a[-1]
    return cont[1:-1], var[1:-1]


@dataclass
class _Hist:
    values: np.ndarray
    weights: np.ndarray | None
    label: str
    colour: str | None
    linestyle: str
    filled: bool


class HistogramPlot(PlotBase):
    """Step histograms normalised to unit area, with statistical error bands and vertical lines.

    Parameters
    ----------
    bins : int | np.ndarray, optional
        Number of bins (common range of all added data) or edges.
    norm : bool, optional
        Normalise each histogram to unit area, by default True.
    **kwargs
        Passed to :class:`PlotBase` (``xlabel``, ``ylabel``, ``logy``, ``label_lines``).
    """

    def __init__(self, bins: int | np.ndarray = 50, norm: bool = True, **kwargs) -> None:
        kwargs.setdefault("ylabel", "Normalised number of entries" if norm else "Entries")
        super().__init__(**kwargs)
        self.bins = bins
        self.norm = norm
        self.hists: list[_Hist] = []
        self.lines: list[tuple[float, str]] = []
        self.contents: list[np.ndarray] = []  # drawn bin contents, filled by draw()
        self.edges: np.ndarray | None = None

    def add(
        self,
        values: np.ndarray,
        label: str,
        weights: np.ndarray | None = None,
        colour: str | None = None,
        linestyle: str = "-",
        filled: bool = False,
    ) -> HistogramPlot:
        """Add one distribution.

        Parameters
        ----------
        values : np.ndarray
            Data.
        label : str
            Legend label.
        weights : np.ndarray | None, optional
            Weights.
        colour : str | None, optional
            Colour.
        linestyle : str, optional
            Line style.
        filled : bool, optional
            Fill under the histogram.

        Returns
        -------
        HistogramPlot
            ``self``.
        """
        v = np.asarray(values, dtype=np.float64)
        self.hists.append(_Hist(v, None if weights is None else np.asarray(weights), label, colour,
                                linestyle, filled))
        return self

    def add_line(self, x: float, label: str) -> HistogramPlot:
        """Add a vertical line (e.g. a working-point cut) labelled at the top.

        Parameters
        ----------
        x : float
            Position.
        label : str
            Text (e.g. ``"77%"``).

        Returns
        -------
        HistogramPlot
            ``self``.
        """
        self.lines.append((float(x), label))
        return self

    def _edges(self) -> np.ndarray:
        if not (np.isscalar(self.bins) or np.ndim(self.bins) == 0):
            return np.asarray(self.bins, dtype=float)
        finite = [h.values[np.isfinite(h.values)] for h in self.hists]
        finite = [f for f in finite if f.size]
        if not finite:
            return np.linspace(0, 1, int(self.bins) + 1)
        allv = np.concatenate(finite)
        lo, hi = np.percentile(allv, [0.05, 99.95]) if allv.size > 2000 else (allv.min(), allv.max())
        if hi <= lo:
            hi = lo + 1.0
        return np.linspace(lo, hi, int(self.bins) + 1)

    def draw(self):
        """Build the figure."""
        edges = self._edges()
        with style():
            fig, axes = new_figure(self.figsize)
            ax = axes[0]
            drawn: list[np.ndarray] = []
            for i, h in enumerate(self.hists):
                c = h.colour or colour(i)
                # sum of weights and of squared weights; under/overflow shown in the edge bins
                cont, var = folded_contents(fill_histogram(h.values, edges, h.weights))
                err = np.sqrt(var)
                if self.norm and cont.sum() > 0:
                    scale = 1.0 / (cont.sum() * np.diff(edges))
                    cont, err = cont * scale, err * scale
                drawn.append(cont)
                ax.stairs(cont, edges, color=c, ls=h.linestyle, label=h.label, fill=False, lw=1.6)
                if h.filled:
                    ax.stairs(cont, edges, color=c, alpha=0.25, fill=True)
                has = cont > 0
                ax.stairs(np.where(has, cont + err, np.nan), edges,
                          baseline=np.where(has, np.maximum(cont - err, cont * 1e-3), np.nan),
                          fill=True, color=c, alpha=0.15, lw=0)
            positive = [c[c > 0] for c in drawn if np.any(c > 0)]
            ymax = max((float(c.max()) for c in positive), default=1.0)
            if self.logy:
                ax.set_yscale("log")
                ymin = min(float(c.min()) for c in positive) * 0.5 if positive else 1e-3
                ax.set_ylim(ymin, ymax * (ymax / ymin) ** 0.45)
            else:
                ax.set_ylim(0, ymax * 1.45)
            for x, text in self.lines:
                ax.axvline(x, color="0.3", ls="--", lw=1.0)
                ax.text(x, 0.6, f" {text}", transform=ax.get_xaxis_transform(), rotation=90,
                        fontsize=9, va="bottom", ha="right", color="0.3")
            ax.set_xlim(edges[0], edges[-1])
            ax.set_xlabel(self.xlabel)
            ax.set_ylabel(self.ylabel)
            ax.legend(loc="upper right")
            add_experiment_label(ax, self.label_lines)
        self.fig, self.axes = fig, axes
        self.contents, self.edges = drawn, edges
        return fig


def mass_sculpting_plot(
    mass_pass: np.ndarray,
    mass_fail: np.ndarray,
    bins: int | np.ndarray,
    w_pass: np.ndarray | None = None,
    w_fail: np.ndarray | None = None,
    xlabel: str = "Jet mass [GeV]",
    label_lines: Sequence[str] | None = None,
    sig_eff: float = 0.5,
) -> HistogramPlot:
    """Normalised background mass for jets passing and failing a cut (mass sculpting).

    Parameters
    ----------
    mass_pass, mass_fail : np.ndarray
        Background mass of passing and failing jets.
    bins : int | np.ndarray
        Binning (use the one of the JSD you quote).
    w_pass, w_fail : np.ndarray | None, optional
        Weights.
    xlabel : str, optional
        x label.
    label_lines : Sequence[str] | None, optional
        Extra text lines.
    sig_eff : float, optional
        Signal efficiency of the cut (legend text).

    Returns
    -------
    HistogramPlot
        The plot (not drawn).
    """
    plot = HistogramPlot(bins=bins, xlabel=xlabel, label_lines=label_lines)
    plot.add(mass_fail, f"Background failing ({sig_eff:.0%} sig. eff. cut)", w_fail,
             colour="#7f7f7f", filled=True)
    plot.add(mass_pass, "Background passing", w_pass, colour="#d62728")
    return plot
