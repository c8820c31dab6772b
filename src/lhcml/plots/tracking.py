"""Track-finding figures: rates vs a variable per method, and the event display.

Both follow the ``add -> draw -> save`` pattern of :class:`lhcml.plots.style.PlotBase` and the
lhcml mplhep style. :class:`RateVsVar` draws binned fractions with binomial error bars (the
``binned_rate`` dictionaries of :mod:`lhcml.metrics.tracking`); :class:`EventDisplay` shows one
event in the transverse (x–y) and longitudinal (r–z) views: all hits in grey, the true tracks of
the selected particles (top row) and the found candidates coloured by their ACTS-style class
(bottom row: matched, duplicate, fake).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from lhcml.plots.style import PlotBase, add_experiment_label, colour, style

#: colours of the candidate classes in the event display (our choice)
CLASS_COLOURS = {"matched": "#1f77b4", "duplicate": "#ff7f0e", "fake": "#d62728"}


class RateVsVar(PlotBase):
    """Fractions (efficiency, fake or duplicate rate) vs a variable, one series per method.

    Parameters
    ----------
    logx : bool, optional
        Logarithmic x axis (pT).
    **kwargs
        :class:`PlotBase` arguments (``xlabel``, ``ylabel``, ``label_lines``, ``figsize``).
    """

    def __init__(self, logx: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.logx = logx
        self.series: list[tuple[str, dict[str, list[float]]]] = []

    def add(self, label: str, binned: Mapping[str, Sequence[float]]) -> RateVsVar:
        """Add a series: a dict with ``edges``, ``value``, ``error`` (NaN bins are skipped)."""
        self.series.append((label, {k: list(v) for k, v in binned.items()}))
        return self

    def add_points(self, label: str, x: Sequence[float], value: Sequence[float | None],
                   error: Sequence[float | None]) -> RateVsVar:  # fmt: skip
        """Add a series of points without bins (e.g. a rate vs ⟨μ⟩), joined by a line."""
        self.series.append((label, {"x": list(x), "value": list(value), "error": list(error)}))
        return self

    def draw(self):
        """Build the figure."""
        from lhcml.plots.style import new_figure

        with style():
            fig, axes = new_figure(self.figsize)
            ax = axes[0]
            top = 0.0
            for i, (label, b) in enumerate(self.series):
                v = np.array([np.nan if x is None else x for x in b["value"]], dtype=float)
                err = np.array([np.nan if x is None else x for x in b["error"]], dtype=float)
                ok = np.isfinite(v)
                if "x" in b:  # points
                    xs = np.asarray(b["x"], dtype=float)
                    ax.errorbar(xs[ok], v[ok], yerr=np.nan_to_num(err[ok]), fmt="o-", ms=4, color=colour(i),
                                label=label, capsize=0)  # fmt: skip
                    span = float(np.ptp(xs)) if len(xs) > 1 else 1.0
                    ax.set_xlim(float(xs.min()) - 0.08 * span, float(xs.max()) + 0.08 * span)
                else:
                    e = np.asarray(b["edges"], dtype=float)
                    centres = np.sqrt(e[:-1] * e[1:]) if self.logx and np.all(e > 0) else 0.5 * (e[:-1] + e[1:])
                    ax.errorbar(centres[ok], v[ok], yerr=np.nan_to_num(err[ok]),
                                xerr=[centres[ok] - e[:-1][ok], e[1:][ok] - centres[ok]],
                                fmt="o", ms=4, color=colour(i), label=label, capsize=0)  # fmt: skip
                    ax.set_xlim(e[0], e[-1])
                if ok.any():
                    top = max(top, float(np.nanmax(v[ok] + np.nan_to_num(err[ok]))))
            if self.logx:
                ax.set_xscale("log")
            ax.set_ylim(0.0, max(1.05, top) * 1.35 if top > 0.2 else max(top * 1.6, 0.05))
            ax.set_xlabel(self.xlabel)
            ax.set_ylabel(self.ylabel)
            if self.series:
                ax.legend(loc="upper right")
            add_experiment_label(ax, self.label_lines)
        self.fig, self.axes = fig, axes
        return fig


def _segments(group: np.ndarray, x: np.ndarray, y: np.ndarray, order: np.ndarray) -> list[np.ndarray]:
    """Polylines through the points of each group, in the order of ``order`` (radius)."""
    idx = np.lexsort((order, group))
    g, xs, ys = group[idx], x[idx], y[idx]
    cuts = np.flatnonzero(g[1:] != g[:-1]) + 1
    return [np.column_stack([a, b]) for a, b in zip(np.split(xs, cuts), np.split(ys, cuts), strict=True) if len(a) > 1]


class EventDisplay(PlotBase):
    """One event: hits, true tracks and found tracks in x–y and r–z (a 2 × 2 figure)."""

    def __init__(self, label_lines: Sequence[str] | None = None, figsize: tuple[float, float] = (13.0, 11.0)) -> None:
        super().__init__(label_lines=label_lines, figsize=figsize)
        self.hits: pd.DataFrame | None = None
        self.true_tracks: pd.DataFrame | None = None
        self.found: pd.DataFrame | None = None
        self.n_selected = 0

    def add_event(self, hits: pd.DataFrame, truth: pd.DataFrame, particles: pd.DataFrame, min_pt: float = 1.0) -> EventDisplay:
        """Hits (``hit_id, x, y, z``) and the true tracks of charged particles above ``min_pt`` GeV."""
        from lhcml.metrics.tracking import particle_table

        self.hits = hits[["hit_id", "x", "y", "z"]].copy()
        pt = particle_table(truth, particles)
        keep = pt.loc[(pt["pt"] > min_pt) & (pt["q"] != 0) & (pt["nhits"] >= 3), "particle_id"]
        self.n_selected = len(keep)
        tr = truth.loc[truth["particle_id"].isin(keep), ["hit_id", "particle_id"]]
        self.true_tracks = tr.merge(self.hits, on="hit_id")
        return self

    def add_candidates(self, track_id: np.ndarray, hit_id: np.ndarray, matching: pd.DataFrame, min_track_hits: int = 1) -> EventDisplay:
        """Found candidates and their classes (:func:`lhcml.metrics.tracking.match_tracks` output)."""
        if self.hits is None:
            raise ValueError("add_event() first")
        cls = np.where(matching["fake"], "fake", np.where(matching["duplicate"], "duplicate", "matched"))
        m = pd.DataFrame({"track_id": matching["track_id"].to_numpy(), "cls": cls, "n": matching["nhits"].to_numpy()})
        m = m[m["n"] >= min_track_hits]
        c = pd.DataFrame({"track_id": np.asarray(track_id), "hit_id": np.asarray(hit_id)}).merge(m, on="track_id")
        self.found = c.merge(self.hits, on="hit_id")
        return self

    def draw(self):
        """Build the figure."""
        from matplotlib.collections import LineCollection
        from matplotlib.figure import Figure

        if self.hits is None:
            raise ValueError("add_event() first")
        with style():
            fig = Figure(figsize=self.figsize)
            axes = fig.subplots(2, 2)
            hx, hy, hz = (self.hits[c].to_numpy() for c in ("x", "y", "z"))
            hr = np.hypot(hx, hy)
            for row in range(2):
                axes[row, 0].scatter(hx, hy, s=1.0, c="0.7", lw=0, rasterized=True)
                axes[row, 1].scatter(hz, hr, s=1.0, c="0.7", lw=0, rasterized=True)
            if self.true_tracks is not None and len(self.true_tracks):
                t = self.true_tracks
                x, y, z = (t[c].to_numpy() for c in ("x", "y", "z"))
                r = np.hypot(x, y)
                g = t["particle_id"].to_numpy()
                axes[0, 0].add_collection(LineCollection(_segments(g, x, y, r), lw=0.6, color=colour(2), alpha=0.8))
                axes[0, 1].add_collection(LineCollection(_segments(g, z, r, r), lw=0.6, color=colour(2), alpha=0.8))
            counts = {}
            if self.found is not None and len(self.found):
                f = self.found
                for k, col in CLASS_COLOURS.items():
                    s = f[f["cls"] == k]
                    counts[k] = s["track_id"].nunique()
                    if not len(s):
                        continue
                    x, y, z = (s[c].to_numpy() for c in ("x", "y", "z"))
                    r = np.hypot(x, y)
                    g = s["track_id"].to_numpy()
                    axes[1, 0].add_collection(LineCollection(_segments(g, x, y, r), lw=0.6, color=col, alpha=0.8))
                    axes[1, 1].add_collection(LineCollection(_segments(g, z, r, r), lw=0.6, color=col, alpha=0.8))
            for row in range(2):
                axes[row, 0].set_xlabel("x [mm]")
                axes[row, 0].set_ylabel("y [mm]")
                axes[row, 0].set_aspect("equal", adjustable="box")
                axes[row, 1].set_xlabel("z [mm]")
                axes[row, 1].set_ylabel("r [mm]")
                rmax = float(hr.max()) * 1.05 if len(hr) else 1.0
                axes[row, 0].set_xlim(-rmax, rmax)
                axes[row, 0].set_ylim(-rmax, rmax)
                zmax = float(np.abs(hz).max()) * 1.05 if len(hz) else 1.0
                axes[row, 1].set_xlim(-zmax, zmax)
                axes[row, 1].set_ylim(0, rmax * 1.25)
            add_experiment_label(axes[0, 1], self.label_lines + [f"true tracks: {self.n_selected}", f"hits: {len(self.hits)}"])
            found_txt = ", ".join(f"{k} {v}" for k, v in counts.items())
            add_experiment_label(axes[1, 1], [f"found: {found_txt}" if counts else "found: none"])
            fig.tight_layout()
        self.fig, self.axes = fig, list(axes.ravel())
        return fig
