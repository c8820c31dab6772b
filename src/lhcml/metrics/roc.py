"""ROC curves in the flavour-tagging convention: background rejection vs signal efficiency.

For each signal efficiency on a grid, the cut is the weighted ``1 - eff`` quantile of the signal
discriminant (see :mod:`lhcml.metrics.working_points`) and the background efficiency is the
weighted fraction with ``D >= cut``; the rejection is its inverse, with the binomial error
using the (effective) number of background entries, as ``puma.Roc`` with ``n_test``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lhcml.metrics.working_points import (
    cut_at_efficiency,
    effective_n,
    efficiency_error,
    rejection_error,
)

#: default signal-efficiency grid of ROC curves (puma's examples use 0.49-1.0)
DEFAULT_SIG_EFF = np.linspace(0.4, 1.0, 121)


def _pass_fraction(values: np.ndarray, weights: np.ndarray | None, cuts: np.ndarray) -> np.ndarray:
    """Weighted fraction of ``values >= cut`` for many cuts (sort once, search)."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="stable")
    v = v[order]
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=np.float64)[order]
    cum = np.concatenate([[0.0], np.cumsum(w)])
    total = cum[-1]
    below = cum[np.searchsorted(v, cuts, side="left")]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total - below) / total


@dataclass
class RocCurve:
    """A ROC curve: signal efficiency grid, background efficiency/rejection and entries."""

    sig_eff: np.ndarray
    bkg_eff: np.ndarray
    n_bkg: float
    cuts: np.ndarray

    @property
    def bkg_rej(self) -> np.ndarray:
        """Background rejection 1/eps_B (inf where no background passes)."""
        with np.errstate(divide="ignore"):
            return np.where(self.bkg_eff > 0, 1.0 / np.where(self.bkg_eff > 0, self.bkg_eff, 1), np.inf)

    @property
    def bkg_rej_err(self) -> np.ndarray:
        """Binomial error of the rejection (NaN where it is infinite)."""
        if self.n_bkg <= 0:
            return np.full_like(self.sig_eff, np.nan)
        return np.asarray(rejection_error(self.bkg_rej, self.n_bkg), dtype=float)

    @property
    def bkg_eff_err(self) -> np.ndarray:
        """Binomial error of the background efficiency."""
        return np.asarray(efficiency_error(self.bkg_eff, max(self.n_bkg, 1e-300)), dtype=float)

    def ratio_to(self, reference: RocCurve) -> tuple[np.ndarray, np.ndarray]:
        """Rejection ratio to a reference curve on the same grid, with its error band.

        The band is the relative binomial error of this curve times the ratio (puma's
        convention; the reference's own band is drawn around 1).

        Parameters
        ----------
        reference : RocCurve
            Reference tagger's curve, same signal-efficiency grid.

        Returns
        -------
        tuple[np.ndarray, np.ndarray]
            (ratio, error); NaN where either rejection is infinite.

        Raises
        ------
        ValueError
            If the grids differ.
        """
        if not np.array_equal(self.sig_eff, reference.sig_eff):
            raise ValueError("ROC curves must share the signal-efficiency grid to be divided")
        rej, ref = self.bkg_rej, reference.bkg_rej
        ok = np.isfinite(rej) & np.isfinite(ref)
        ratio = np.where(ok, rej / np.where(ok, ref, 1.0), np.nan)
        rel = np.where(ok, self.bkg_rej_err / np.where(ok, rej, 1.0), np.nan)
        return ratio, ratio * rel

    def to_dict(self) -> dict:
        """A JSON-friendly dictionary (non-finite numbers become None)."""

        def clean(a: np.ndarray) -> list:
            return [float(x) if np.isfinite(x) else None for x in np.asarray(a, dtype=float)]

        return {
            "sig_eff": clean(self.sig_eff),
            "bkg_rej": clean(self.bkg_rej),
            "bkg_rej_err": clean(self.bkg_rej_err),
            "n_bkg": float(self.n_bkg),
        }


def roc_curve(
    disc_sig: np.ndarray,
    disc_bkg: np.ndarray,
    sig_eff: np.ndarray | None = None,
    w_sig: np.ndarray | None = None,
    w_bkg: np.ndarray | None = None,
) -> RocCurve:
    """Background efficiency and rejection on a grid of signal efficiencies.

    Parameters
    ----------
    disc_sig, disc_bkg : np.ndarray
        Signal and background discriminants.
    sig_eff : np.ndarray | None, optional
        Signal-efficiency grid, by default :data:`DEFAULT_SIG_EFF`.
    w_sig, w_bkg : np.ndarray | None, optional
        Weights; the rejection error uses the effective number of background entries.

    Returns
    -------
    RocCurve
        The curve.
    """
    grid = DEFAULT_SIG_EFF if sig_eff is None else np.asarray(sig_eff, dtype=np.float64)
    cuts = np.atleast_1d(cut_at_efficiency(disc_sig, grid, w_sig))
    bkg_eff = _pass_fraction(disc_bkg, w_bkg, cuts)
    return RocCurve(grid.copy(), bkg_eff, effective_n(w_bkg, len(disc_bkg)), cuts)
