"""Designed decorrelated tagger (DDT, Dolen et al., JHEP 05 (2016) 156) for τ21.

``τ21' = τ21 − M · ρ'`` with ``ρ' = ln(m² / (pT · μ))``, μ = 1 GeV, and ``M`` the slope of a
straight-line fit of the background profile ⟨τ21⟩(ρ') in the linear region ``fit_range``
(default ``1.5 < ρ' < 4``, the region where the QCD profile is linear for R = 0.8–1.0 jets at
pT ~ 600 GeV). A cut on τ21' keeps the background mass distribution far less sculpted than a
cut on τ21. Smaller τ21' is more signal-like; use ``−τ21'`` as a discriminant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lhcml.errors import ConfigError

#: MeV per GeV (μ = 1 GeV)
_GEV = 1000.0


def rho_prime(mass: np.ndarray, pt: np.ndarray) -> np.ndarray:
    """``ρ' = ln(m² / (pT · 1 GeV))`` from mass and pT in MeV (−inf for massless jets)."""
    m = np.asarray(mass, dtype=np.float64) / _GEV
    p = np.asarray(pt, dtype=np.float64) / _GEV
    with np.errstate(divide="ignore"):
        return np.log(m * m / p)


@dataclass(frozen=True)
class DDT:
    """A fitted DDT transformation ``τ21' = τ21 − slope · ρ'`` (intercept kept for plots)."""

    slope: float
    intercept: float
    fit_range: tuple[float, float]
    #: fit quality: statistical error of the slope, χ² of the line through the profile, and its
    #: degrees of freedom (χ²/ndf ≫ 1: the profile is not linear in ``fit_range``)
    slope_err: float = float("nan")
    chi2: float = float("nan")
    ndf: int = 0

    def transform(self, tau21: np.ndarray, mass: np.ndarray, pt: np.ndarray) -> np.ndarray:
        """τ21' for jets (mass, pT in MeV)."""
        return np.asarray(tau21, dtype=np.float64) - self.slope * rho_prime(mass, pt)

    def discriminant(self, tau21: np.ndarray, mass: np.ndarray, pt: np.ndarray) -> np.ndarray:
        """``−τ21'`` (larger = more signal-like), for ROC/rejection code."""
        return -self.transform(tau21, mass, pt)


def fit_ddt(
    tau21: np.ndarray,
    mass: np.ndarray,
    pt: np.ndarray,
    weights: np.ndarray | None = None,
    fit_range: tuple[float, float] = (1.5, 4.0),
    n_bins: int = 20,
) -> DDT:
    """Fit the DDT slope on **background** jets: a weighted line through the τ21 profile.

    Parameters
    ----------
    tau21, mass, pt
        Background jets' τ21 and kinematics (MeV).
    weights
        Per-jet weights.
    fit_range
        ρ' range of the linear fit.
    n_bins
        Profile bins in ``fit_range``.
    """
    edges = np.linspace(fit_range[0], fit_range[1], n_bins + 1)
    centres, mean, err, cnt = ddt_profile(tau21, mass, pt, edges, weights)
    good = cnt >= 5
    if good.sum() < 2:
        raise ConfigError(
            f"DDT fit needs at least two ρ' bins in {fit_range} with >= 5 background jets; "
            "give more background jets or widen fit_range"
        )
    x, y, e = centres[good], mean[good], err[good]
    (slope, intercept), cov = np.polyfit(x, y, 1, w=1.0 / e, cov="unscaled")
    chi2 = float((((y - (slope * x + intercept)) / e) ** 2).sum())
    return DDT(float(slope), float(intercept), (float(fit_range[0]), float(fit_range[1])),
               float(np.sqrt(cov[0, 0])), chi2, int(good.sum()) - 2)  # fmt: skip


def ddt_profile(
    tau21: np.ndarray,
    mass: np.ndarray,
    pt: np.ndarray,
    edges: np.ndarray,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The (weighted) profile ⟨τ21⟩ in bins of ρ'.

    Returns
    -------
    (centres, mean, error, counts)
        Bin centres, weighted mean τ21 (NaN in empty bins), its error (weighted RMS / √N, at
        least 1e-3/√N) and the jet counts per bin.
    """
    edges = np.asarray(edges, dtype=np.float64)
    n_bins = len(edges) - 1
    rho = rho_prime(mass, pt)
    t = np.asarray(tau21, dtype=np.float64)
    w = np.ones_like(t) if weights is None else np.asarray(weights, dtype=np.float64)
    idx = np.digitize(rho, edges) - 1
    ok = (idx >= 0) & (idx < n_bins) & np.isfinite(t)
    sw = np.bincount(idx[ok], weights=w[ok], minlength=n_bins)
    swt = np.bincount(idx[ok], weights=(w * t)[ok], minlength=n_bins)
    swt2 = np.bincount(idx[ok], weights=(w * t * t)[ok], minlength=n_bins)
    cnt = np.bincount(idx[ok], minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = swt / sw
        var = np.maximum(swt2 / sw - mean**2, 1e-6)
        err = np.sqrt(var / cnt)
    return 0.5 * (edges[1:] + edges[:-1]), mean, err, cnt
