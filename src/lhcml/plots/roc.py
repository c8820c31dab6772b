"""ROC plot: background rejection (log) vs signal efficiency with one ratio panel per background
class, relative to a reference tagger (``add -> draw -> save``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lhcml.metrics.roc import RocCurve
from lhcml.plots.style import PlotBase, add_experiment_label, colour, linestyle, new_figure, style


@dataclass
class _RocEntry:
    roc: RocCurve
    tagger: str
    background: str
    label: str
    colour: str | None


class RocPlot(PlotBase):
    """Rejection-vs-efficiency curves of several taggers and background classes.

    Parameters
    ----------
    signal_label : str, optional
        Signal name for the x label (``$b$-jet`` gives "$b$-jet efficiency").
    reference : str | None, optional
        Tagger used as denominator of the ratio panels (no ratio panel when None).
    background_labels : dict[str, str] | None, optional
        Background class -> label for the ratio-panel y axis and the legend.
    ratio : bool, optional
        Draw ratio panels, by default True when a reference is set.
    **kwargs
        Passed to :class:`PlotBase` (``label_lines``, ``figsize``).
    """

    def __init__(
        self,
        signal_label: str = "Signal",
        reference: str | None = None,
        background_labels: dict[str, str] | None = None,
        ratio: bool = True,
        **kwargs,
    ) -> None:
        kwargs.setdefault("figsize", (7.0, 6.5))
        super().__init__(
            xlabel=f"{signal_label} efficiency", ylabel="Background rejection", logy=True, **kwargs
        )
        self.reference = reference
        self.background_labels = dict(background_labels or {})
        self.ratio = ratio
        self.entries: list[_RocEntry] = []

    def add(
        self,
        roc: RocCurve,
        tagger: str,
        background: str,
        label: str | None = None,
        colour: str | None = None,
    ) -> RocPlot:
        """Add one curve.

        Parameters
        ----------
        roc : RocCurve
            The curve.
        tagger : str
            Tagger name (matched against ``reference``).
        background : str
            Background class name.
        label : str | None, optional
            Legend label for the tagger (default: the tagger name).
        colour : str | None, optional
            Line colour (default: one per tagger).

        Returns
        -------
        RocPlot
            ``self``, for chaining.
        """
        self.entries.append(_RocEntry(roc, tagger, background, label or tagger, colour))
        return self

    def _backgrounds(self) -> list[str]:
        return list(dict.fromkeys(e.background for e in self.entries))

    def _taggers(self) -> list[str]:
        return list(dict.fromkeys(e.tagger for e in self.entries))

    def draw(self):
        """Build the figure (main panel plus ratio panels)."""
        bkgs, taggers = self._backgrounds(), self._taggers()
        with_ratio = self.ratio and self.reference in taggers
        with style():
            heights = [3.0] + ([1.0] * len(bkgs) if with_ratio else [])
            fig, axes = new_figure(self.figsize, heights)
            ax = axes[0]
            ref = {e.background: e.roc for e in self.entries if e.tagger == self.reference}
            tag_colour = {t: colour(i) for i, t in enumerate(taggers)}
            for e in self.entries:
                c = e.colour or tag_colour[e.tagger]
                ls = linestyle(bkgs.index(e.background))
                rej = e.roc.bkg_rej
                ok = np.isfinite(rej)
                ax.plot(e.roc.sig_eff[ok], rej[ok], color=c, ls=ls)
                err = e.roc.bkg_rej_err
                if np.isfinite(err).any():
                    ax.fill_between(
                        e.roc.sig_eff[ok], (rej - err)[ok], (rej + err)[ok], color=c, alpha=0.2,
                        lw=0,
                    )
                if with_ratio and e.background in ref:
                    rax = axes[1 + bkgs.index(e.background)]
                    ratio, rerr = e.roc.ratio_to(ref[e.background])
                    m = np.isfinite(ratio)
                    rax.plot(e.roc.sig_eff[m], ratio[m], color=c, ls=ls)
                    rax.fill_between(
                        e.roc.sig_eff[m], (ratio - rerr)[m], (ratio + rerr)[m], color=c,
                        alpha=0.2, lw=0,
                    )
            ax.set_yscale("log")
            ax.set_ylabel(self.ylabel)
            # legends: taggers by colour, backgrounds by line style
            from matplotlib.lines import Line2D

            labels = {e.tagger: e.label for e in self.entries}
            h_tag = [Line2D([], [], color=tag_colour[t], label=labels[t]) for t in taggers]
            h_bkg = [
                Line2D([], [], color="k", ls=linestyle(i), label=self.background_labels.get(b, b))
                for i, b in enumerate(bkgs)
            ]
            leg = ax.legend(handles=h_tag, loc="upper right")
            ax.add_artist(leg)
            if len(bkgs) > 1:
                ax.legend(handles=h_bkg, loc="lower left")
            lo, hi = ax.get_ylim()
            ax.set_ylim(max(lo, 0.8), hi * 8)
            add_experiment_label(ax, self.label_lines)
            if with_ratio:
                for i, b in enumerate(bkgs):
                    rax = axes[1 + i]
                    rax.axhline(1.0, color="0.4", lw=0.8)
                    lab = self.background_labels.get(b, b)
                    rax.set_ylabel(f"{lab}\nratio", fontsize=10)
            axes[-1].set_xlabel(self.xlabel)
            fig.align_ylabels(axes)
        self.fig, self.axes = fig, axes
        return fig


def roc_plot_from_curves(
    curves: dict[str, dict[str, RocCurve]],
    reference: str | None,
    signal_label: str,
    background_labels: dict[str, str],
    tagger_labels: dict[str, str] | None = None,
    label_lines: Sequence[str] | None = None,
) -> RocPlot:
    """Convenience: a :class:`RocPlot` from ``curves[tagger][background]``.

    Parameters
    ----------
    curves : dict[str, dict[str, RocCurve]]
        Curves per tagger and background.
    reference : str | None
        Reference tagger.
    signal_label : str
        Signal label for the x axis.
    background_labels : dict[str, str]
        Background labels.
    tagger_labels : dict[str, str] | None, optional
        Legend labels of the taggers.
    label_lines : Sequence[str] | None, optional
        Extra lines under the lhcml label.

    Returns
    -------
    RocPlot
        The plot (not drawn yet).
    """
    plot = RocPlot(signal_label, reference, background_labels, label_lines=label_lines)
    for tagger, per_bkg in curves.items():
        for bkg, roc in per_bkg.items():
            plot.add(roc, tagger, bkg, (tagger_labels or {}).get(tagger))
    return plot
