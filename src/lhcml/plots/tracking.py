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
    """One event: hits, true tracks and found tracks in x–y and r–z (a 2 × 2 figure).

    A busy event (more than ``max_tracks`` selected true tracks, as at ⟨μ⟩ = 200) is shown in a
    φ sector holding about ``max_tracks`` of them (hits and track segments with φ in the sector),
    so that single tracks stay visible; the sector is named on the figure.
    """

    def __init__(self, label_lines: Sequence[str] | None = None, figsize: tuple[float, float] = (13.0, 11.0),
                 max_tracks: int = 150) -> None:  # fmt: skip
        super().__init__(label_lines=label_lines, figsize=figsize)
        self.hits: pd.DataFrame | None = None
        self.true_tracks: pd.DataFrame | None = None
        self.found: pd.DataFrame | None = None
        self.n_selected = 0
        self.max_tracks = max_tracks

    def _sector(self) -> float | None:
        """Half-width [rad] of the φ sector shown (``None``: the whole event)."""
        if self.n_selected <= self.max_tracks:
            return None
        return float(np.pi * self.max_tracks / self.n_selected)

    @staticmethod
    def _in_sector(df: pd.DataFrame, half: float | None) -> pd.DataFrame:
        if half is None:
            return df
        return df[np.abs(np.arctan2(df["y"].to_numpy(), df["x"].to_numpy())) < half]

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
        half = self._sector()
        hits = self._in_sector(self.hits, half)
        true_tracks = None if self.true_tracks is None else self._in_sector(self.true_tracks, half)
        found_tracks = None if self.found is None else self._in_sector(self.found, half)
        with style():
            fig = Figure(figsize=self.figsize)
            axes = fig.subplots(2, 2)
            ax_, ay_, az_ = (self.hits[c].to_numpy() for c in ("x", "y", "z"))
            r_all = np.hypot(ax_, ay_)
            hx, hy, hz = (hits[c].to_numpy() for c in ("x", "y", "z"))
            hr = np.hypot(hx, hy)
            for row in range(2):
                axes[row, 0].scatter(hx, hy, s=1.0, c="0.7", lw=0, rasterized=True)
                axes[row, 1].scatter(hz, hr, s=1.0, c="0.7", lw=0, rasterized=True)
            if true_tracks is not None and len(true_tracks):
                t = true_tracks
                x, y, z = (t[c].to_numpy() for c in ("x", "y", "z"))
                r = np.hypot(x, y)
                g = t["particle_id"].to_numpy()
                axes[0, 0].add_collection(LineCollection(_segments(g, x, y, r), lw=0.6, color=colour(2), alpha=0.8))
                axes[0, 1].add_collection(LineCollection(_segments(g, z, r, r), lw=0.6, color=colour(2), alpha=0.8))
            counts = {}  # whole event, not only the sector
            if self.found is not None and len(self.found):
                counts = {k: int(self.found.loc[self.found["cls"] == k, "track_id"].nunique()) for k in CLASS_COLOURS}
            if found_tracks is not None and len(found_tracks):
                f = found_tracks
                for k in ("fake", "duplicate", "matched"):  # matched drawn last, on top
                    col = CLASS_COLOURS[k]
                    s = f[f["cls"] == k]
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
                rmax = float(r_all.max()) * 1.05 if len(r_all) else 1.0
                axes[row, 0].set_xlim(-rmax, rmax)
                axes[row, 0].set_ylim(-rmax, rmax)
                zmax = float(np.abs(az_).max()) * 1.05 if len(az_) else 1.0
                axes[row, 1].set_xlim(-zmax, zmax)
                axes[row, 1].set_ylim(0, rmax * 1.4)
            where = [] if half is None else [f"shown: |φ| < {np.degrees(half):.0f}° (of {self.n_selected} true tracks)"]
            add_experiment_label(axes[0, 1], self.label_lines + [f"true tracks: {self.n_selected}",
                                                                 f"hits: {len(self.hits)}", *where])  # fmt: skip
            found_txt = ", ".join(f"{k} {v}" for k, v in counts.items())
            add_experiment_label(axes[1, 1], [f"found: {found_txt}" if counts else "found: none"])
            fig.tight_layout()
        self.fig, self.axes = fig, list(axes.ravel())
        return fig
