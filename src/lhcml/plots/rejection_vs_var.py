"""Background rejection vs a variable (pT) at a fixed working point, with a signal-efficiency
panel, and the R50 vs 1/JSD50 "frontier" plot of mass decorrelation (``add -> draw -> save``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lhcml.metrics.rejection import BinnedRejection
from lhcml.plots.style import PlotBase, add_experiment_label, colour, new_figure, style


@dataclass
class _Series:
    binned: BinnedRejection
    label: str
    colour: str | None


class RejectionVsVarPlot(PlotBase):
    """Rejection per bin (top) and signal efficiency per bin (bottom) for several taggers.

    Parameters
    ----------
    xlabel : str, optional
        Variable label, by default jet pT in GeV.
    background_label : str, optional
        Background name for the y label.
    signal_label : str, optional
        Signal name for the efficiency panel.
    **kwargs
        Passed to :class:`PlotBase`.
    """

    def __init__(
        self,
        xlabel: str = "Jet $p_\\mathrm{T}$ [GeV]",
        background_label: str = "Background",
        signal_label: str = "Signal",
        **kwargs,
    ) -> None:
        kwargs.setdefault("figsize", (7.0, 6.5))
        super().__init__(xlabel=xlabel, ylabel=f"{background_label} rejection", **kwargs)
        self.signal_label = signal_label
        self.series: list[_Series] = []

    def add(self, binned: BinnedRejection, label: str, colour: str | None = None) -> RejectionVsVarPlot:
        """Add one tagger's binned rejection.

        Parameters
        ----------
        binned : BinnedRejection
            Result of :func:`lhcml.metrics.rejection.rejection_vs_var`.
        label : str
            Legend label.
        colour : str | None, optional
            Colour.

        Returns
        -------
        RejectionVsVarPlot
            ``self``.
        """
        self.series.append(_Series(binned, label, colour))
        return self

    def draw(self):
        """Build the figure."""
        with style():
            fig, (ax, eax) = new_figure(self.figsize, (3.0, 1.2))
            n = len(self.series)
            for i, s in enumerate(self.series):
                b = s.binned
                c = s.colour or colour(i)
                width = np.diff(b.bin_edges)
                # small horizontal offsets so overlapping error bars stay readable
                x = b.bin_centres + (i - (n - 1) / 2) * 0.08 * width / max(n, 1)
                ok = np.isfinite(b.rejection)
                ax.errorbar(x[ok], b.rejection[ok], yerr=b.rejection_err[ok],
                            xerr=width[ok] / 2, fmt="o", ms=4, color=c, label=s.label, capsize=0)
                ok = np.isfinite(b.sig_eff)
                eax.errorbar(x[ok], b.sig_eff[ok], yerr=b.sig_eff_err[ok], xerr=width[ok] / 2,
                             fmt="o", ms=3, color=c, capsize=0)
            if self.series:
                b0 = self.series[0].binned
                eax.axhline(b0.target_eff, color="0.4", ls="--", lw=0.8)
                mode = "fixed cut" if b0.mode == "fixed_cut" else "flat efficiency per bin"
                lines = [*self.label_lines, f"{b0.target_eff:.0%} WP ({mode})"]
            else:
                lines = self.label_lines
            if self.logy:
                ax.set_yscale("log")
            lo, hi = ax.get_ylim()
            ax.set_ylim(0 if not self.logy else lo, hi * (1.5 if not self.logy else 10))
            ax.set_ylabel(self.ylabel)
            ax.legend(loc="upper right")
            eax.set_ylabel(f"{self.signal_label}\nefficiency", fontsize=10)
            eax.set_xlabel(self.xlabel)
            if self.series:
                edges = self.series[0].binned.bin_edges
                ax.set_xlim(edges[0], edges[-1])
            add_experiment_label(ax, lines)
            fig.align_ylabels([ax, eax])
        self.fig, self.axes = fig, [ax, eax]
        return fig


class FrontierPlot(PlotBase):
    """Scatter of background rejection (R50) vs 1/JSD50, one labelled point per model.

    Points up and to the right are better: more rejection, less mass sculpting.

    Parameters
    ----------
    xlabel, ylabel : str, optional
        Axis labels.
    **kwargs
        Passed to :class:`PlotBase`.
    """

    def __init__(
        self,
        xlabel: str = "Background rejection $R_{50}$",
        ylabel: str = "$1/\\mathrm{JSD}_{50}$",
        **kwargs,
    ) -> None:
        kwargs.setdefault("logy", True)
        super().__init__(xlabel=xlabel, ylabel=ylabel, **kwargs)
        self.points: list[tuple[float, float, str, str | None, str]] = []

    def add(self, x: float, y: float, label: str, colour: str | None = None,
            marker: str = "o") -> FrontierPlot:
        """Add one point.

        Parameters
        ----------
        x : float
            R50 (or any rejection).
        y : float
            1/JSD50.
        label : str
            Text next to the point and in the legend.
        colour : str | None, optional
            Colour.
        marker : str, optional
            Marker.

        Returns
        -------
        FrontierPlot
            ``self``.
        """
        self.points.append((float(x), float(y), label, colour, marker))
        return self

    def draw(self):
        """Build the figure."""
        with style():
            fig, (ax,) = new_figure(self.figsize)
            for i, (x, y, label, c, m) in enumerate(self.points):
                if not (np.isfinite(x) and np.isfinite(y)):
                    continue
                ax.plot([x], [y], marker=m, ls="", ms=8, color=c or colour(i), label=label)
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=9)
            from matplotlib.ticker import NullFormatter, ScalarFormatter

            pts = [(x, y) for x, y, *_ in self.points if np.isfinite(x) and np.isfinite(y)]
            ax.set_xscale("log")
            if self.logy:
                ax.set_yscale("log")
            if pts:
                xs, ys = np.array(pts).T
                ax.set_xlim(xs.min() / 1.6, xs.max() * 1.6)
                if self.logy:
                    ax.set_ylim(ys.min() / 2.0, ys.max() * 12.0)
                else:
                    ax.set_ylim(0, ys.max() * 1.5)
            for axis in (ax.xaxis, ax.yaxis) if self.logy else (ax.xaxis,):
                axis.set_major_formatter(ScalarFormatter())
                axis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(self.xlabel)
            ax.set_ylabel(self.ylabel)
            if self.points:
                ax.legend(loc="upper right")
            add_experiment_label(ax, self.label_lines)
        self.fig, self.axes = fig, [ax]
        return fig
