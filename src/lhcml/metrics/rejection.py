"""Background rejection at fixed signal efficiency, inclusive and in bins of a variable (pT).

Two modes for rejection vs a variable, as puma's ``VarVsEff``:

- ``fixed_cut``: one cut, from the inclusive signal sample at the working point, applied in every
  bin (the signal efficiency then varies with the variable; this is how a working point is used
  in analyses).
- ``flat_per_bin``: a separate cut per bin giving the working-point efficiency in each bin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lhcml.errors import ConfigError
from lhcml.metrics.working_points import cut_at_efficiency, efficiency, rejection

MODES = ("fixed_cut", "flat_per_bin")


def rejection_at_efficiency(
    disc_sig: np.ndarray,
    disc_bkg: np.ndarray,
    sig_eff: float,
    w_sig: np.ndarray | None = None,
    w_bkg: np.ndarray | None = None,
) -> tuple[float, float]:
    """Background rejection 1/eps_B at signal efficiency ``sig_eff``, with its binomial error.

    ``rejection_at_efficiency(s, b, 0.5)`` is R50 of the boosted-tagging literature and
    ``1/eps_B(eps_S = 0.3)`` the top-tagging benchmark figure.

    Parameters
    ----------
    disc_sig, disc_bkg : np.ndarray
        Signal and background discriminants.
    sig_eff : float
        Signal efficiency.
    w_sig, w_bkg : np.ndarray | None, optional
        Weights.

    Returns
    -------
    tuple[float, float]
        (rejection, error).
    """
    cut = cut_at_efficiency(disc_sig, sig_eff, w_sig)
    return rejection(disc_bkg, float(cut), w_bkg)


@dataclass
class BinnedRejection:
    """Rejection and signal efficiency in bins of a variable at one working point."""

    bin_edges: np.ndarray
    mode: str
    target_eff: float
    cuts: np.ndarray
    sig_eff: np.ndarray
    sig_eff_err: np.ndarray
    rejection: np.ndarray
    rejection_err: np.ndarray
    n_sig: np.ndarray
    n_bkg: np.ndarray

    @property
    def bin_centres(self) -> np.ndarray:
        """Bin centres."""
        return 0.5 * (self.bin_edges[1:] + self.bin_edges[:-1])

    def to_dict(self) -> dict:
        """A JSON-friendly dictionary (non-finite numbers become None)."""

        def clean(a: np.ndarray) -> list:
            return [float(x) if np.isfinite(x) else None for x in np.asarray(a, dtype=float)]

        return {
            "bin_edges": clean(self.bin_edges),
            "mode": self.mode,
            "target_eff": self.target_eff,
            "cuts": clean(self.cuts),
            "sig_eff": clean(self.sig_eff),
            "sig_eff_err": clean(self.sig_eff_err),
            "rejection": clean(self.rejection),
            "rejection_err": clean(self.rejection_err),
            "n_sig": [int(x) for x in self.n_sig],
            "n_bkg": [int(x) for x in self.n_bkg],
        }


def rejection_vs_var(
    disc_sig: np.ndarray,
    disc_bkg: np.ndarray,
    var_sig: np.ndarray,
    var_bkg: np.ndarray,
    bin_edges: np.ndarray | list[float],
    target_eff: float,
    mode: str = "fixed_cut",
    w_sig: np.ndarray | None = None,
    w_bkg: np.ndarray | None = None,
) -> BinnedRejection:
    """Background rejection and signal efficiency in bins of a variable.

    Parameters
    ----------
    disc_sig, disc_bkg : np.ndarray
        Signal and background discriminants.
    var_sig, var_bkg : np.ndarray
        The binning variable (e.g. jet pT) for signal and background.
    bin_edges : array-like
        Bin edges (increasing); entries outside are ignored.
    target_eff : float
        Working-point signal efficiency.
    mode : str, optional
        ``fixed_cut`` (one inclusive cut) or ``flat_per_bin`` (a cut per bin).
    w_sig, w_bkg : np.ndarray | None, optional
        Weights.

    Returns
    -------
    BinnedRejection
        Per-bin results; bins with no signal (flat mode) or no background get NaN.

    Raises
    ------
    ConfigError
        For an unknown mode or non-increasing bin edges.
    """
    if mode not in MODES:
        raise ConfigError(f"unknown rejection-vs-variable mode '{mode}' (valid: {', '.join(MODES)})")
    edges = np.asarray(bin_edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ConfigError(f"bin edges must be at least two increasing numbers, got {list(edges)}")
    nb = edges.size - 1
    isig = np.digitize(var_sig, edges) - 1
    ibkg = np.digitize(var_bkg, edges) - 1
    inclusive_cut = float(cut_at_efficiency(disc_sig, target_eff, w_sig))
    out = {k: np.full(nb, np.nan) for k in ("cuts", "se", "see", "rej", "rerr")}
    n_sig = np.bincount(isig[(isig >= 0) & (isig < nb)], minlength=nb)
    n_bkg = np.bincount(ibkg[(ibkg >= 0) & (ibkg < nb)], minlength=nb)
    for i in range(nb):
        ms, mb = isig == i, ibkg == i
        ws = None if w_sig is None else np.asarray(w_sig)[ms]
        wb = None if w_bkg is None else np.asarray(w_bkg)[mb]
        if mode == "fixed_cut":
            cut = inclusive_cut
        else:
            if not ms.any():
                continue
            cut = float(cut_at_efficiency(disc_sig[ms], target_eff, ws))
        out["cuts"][i] = cut
        if ms.any():
            out["se"][i], out["see"][i] = efficiency(disc_sig[ms], cut, ws)
        if mb.any():
            out["rej"][i], out["rerr"][i] = rejection(disc_bkg[mb], cut, wb)
    return BinnedRejection(
        edges,
        mode,
        float(target_eff),
        out["cuts"],
        out["se"],
        out["see"],
        out["rej"],
        out["rerr"],
        n_sig,
        n_bkg,
    )
