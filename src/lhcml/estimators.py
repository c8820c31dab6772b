"""Robust estimators shared by the simulation's calibration and the validation: the project's one
Gaussian core fit and the measurement type it returns.

They sit in the infrastructure layer because two stages need them: the simulation's MC-based
calibrations (:mod:`lhcml.sim.large_r_calibration`: the average response of a calibration bin) and
the validation of a sample (:mod:`lhcml.validation.checks`, which re-exports them). Pure functions on
numpy arrays.

* **robust width** :func:`robust_sigma`: interquartile range / 1.349 (the σ of a Gaussian with
  that IQR); its statistical error is taken as ``0.787 σ / √n`` (the asymptotic error of the
  IQR estimator for a Gaussian).
* **Gaussian core fit** :func:`gaussian_core_fit`: the maximum-likelihood fit of a Gaussian to
  the entries within ``mean ± k σ`` (iterated until stable), with the likelihood normalised on
  that window — and, where entries are cut from below by a selection, on each entry's own
  accepted range.
* **peak position** :func:`gauss_core_peak`: the mean of a Gaussian fitted to a narrower core with the
  width of the ±2 σ fit held (re-exported by :mod:`lhcml.metrics.peaks` with the other peak estimators;
  the simulation's in-situ-like large-R JMS residual fits peaks with it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

#: the σ of a unit Gaussian per unit of interquartile range: σ = IQR / 1.349
IQR_TO_SIGMA = 1.0 / 1.3489795
#: asymptotic statistical error of the IQR/1.349 width of a Gaussian, in units of σ/√n
_IQR_SIGMA_ERR = 0.787
#: fewest finite entries a peak position is estimated from (:func:`gauss_core_peak`; fewer: NaN)
MIN_PEAK_ENTRIES = 20

@dataclass(frozen=True)
class Measurement:
    """One measured validation quantity.

    Attributes
    ----------
    value
        The measured value (NaN when there were no entries).
    error
        Its statistical error (NaN if unknown).
    n
        Number of entries it is computed from.
    note
        How it was computed, shown in the report.
    """

    value: float
    error: float
    n: int
    note: str = ""


def _finite(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).ravel()
    return x[np.isfinite(x)]


def robust_sigma(x: np.ndarray) -> Measurement:
    """IQR/1.349 of the finite entries of ``x`` (module docstring)."""
    x = _finite(x)
    if len(x) < 4:
        return Measurement(float("nan"), float("nan"), len(x), "IQR/1.349")
    q1, q3 = np.percentile(x, [25.0, 75.0])
    s = float((q3 - q1) * IQR_TO_SIGMA)
    return Measurement(s, _IQR_SIGMA_ERR * s / np.sqrt(len(x)), len(x), "IQR/1.349")


def _inverse_hessian(f, x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Inverse of the central finite-difference Hessian of ``f`` at ``x`` (steps ``h``): the
    covariance of a maximum-likelihood estimate when ``f`` is the negative log-likelihood."""
    n = len(x)
    hess = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            ei, ej = np.eye(n)[i] * h[i], np.eye(n)[j] * h[j]
            v = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (4 * h[i] * h[j])
            hess[i, j] = hess[j, i] = v
    try:
        return np.linalg.inv(hess)
    except np.linalg.LinAlgError:
        return np.full((n, n), np.nan)


def gaussian_core_fit(
    x: np.ndarray,
    n_sigma: float = 2.0,
    lower: np.ndarray | float | None = None,
    start: tuple[float, float] | None = None,
    n_iter: int = 8,
) -> tuple[Measurement, Measurement]:
    """Mean and σ of a Gaussian fitted to the core ``mean ± n_sigma·σ`` of ``x`` (iterated).

    Parameters
    ----------
    x
        Entries.
    n_sigma
        Half-width of the fitted window in units of the current σ.
    lower
        Per-entry (or common) lower truncation of the sample: entries below it could not be
        selected (e.g. ``reco_pt_min / truth_pt`` for a jet response). The likelihood of each entry
        is normalised on ``[max(lower, mean − kσ), mean + kσ]``. ``None``: no truncation.
    start
        Starting (mean, σ); default the median and IQR/1.349.
    n_iter
        Maximum number of window updates.

    Returns
    -------
    tuple[Measurement, Measurement]
        The fitted mean and σ, with errors from the inverse of the likelihood's Hessian
        (finite differences at the optimum).
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    lo_all = np.full(len(x), -np.inf) if lower is None else np.broadcast_to(
        np.asarray(lower, dtype=np.float64), x.shape
    )
    ok = np.isfinite(x)
    x, lo_all = x[ok], lo_all[ok]
    nan = Measurement(float("nan"), float("nan"), len(x), "Gaussian core fit")
    if len(x) < 10:
        return nan, nan
    if start is None:
        mu, sig = float(np.median(x)), robust_sigma(x).value
    else:
        mu, sig = float(start[0]), float(start[1])
    if not (np.isfinite(sig) and sig > 0):
        return nan, nan
    cov = np.full((2, 2), np.nan)
    n_core = 0
    for _ in range(n_iter):
        a = np.maximum(lo_all, mu - n_sigma * sig)
        b = mu + n_sigma * sig
        sel = (x >= a) & (x <= b) & (a < b)
        xs, a_s = x[sel], a[sel]
        n_core = len(xs)
        if n_core < 10:
            return nan, nan

        def nll(p: np.ndarray, xs=xs, a_s=a_s, b=b) -> float:
            m, log_s = p
            s = np.exp(log_s)
            norm = special.ndtr((b - m) / s) - special.ndtr((a_s - m) / s)
            return float(np.sum(0.5 * ((xs - m) / s) ** 2 + log_s + np.log(np.maximum(norm, 1e-300))))

        res = optimize.minimize(nll, np.array([mu, np.log(sig)]), method="BFGS")
        new_mu, new_sig = float(res.x[0]), float(np.exp(res.x[1]))
        cov = _inverse_hessian(nll, res.x, np.array([1e-3 * new_sig, 1e-3]))
        converged = abs(new_mu - mu) < 1e-4 * sig and abs(new_sig - sig) < 1e-3 * sig
        mu, sig = new_mu, new_sig
        if converged:
            break
    err_mu = float(np.sqrt(max(cov[0, 0], 0.0))) if np.isfinite(cov[0, 0]) else float("nan")
    err_sig = float(sig * np.sqrt(max(cov[1, 1], 0.0))) if np.isfinite(cov[1, 1]) else float("nan")
    note = f"Gaussian core fit (±{n_sigma:g}σ window, {n_core} entries in the core)"
    return Measurement(mu, err_mu, len(x), note), Measurement(sig, err_sig, len(x), note)


def gauss_core_peak(x: np.ndarray, n_sigma: float = 1.0, width_n_sigma: float = 2.0, n_iter: int = 50) -> float:
    """Mean of a Gaussian fitted iteratively to the core ``mean ± n_sigma·σ`` of ``x``.

    σ is the width of the ±``width_n_sigma`` σ core fit (:func:`gaussian_core_fit`, mean and σ
    free); then only the mean is refitted (unbinned maximum likelihood, the Gaussian normalised on the window)
    and the window re-centred on it until it moves by less than 10⁻⁴ σ. Holding σ keeps a narrow window
    stable: a ±1 σ window alone hardly constrains σ (the truncated Gaussian is nearly flat there), and letting
    it float makes the iteration shrink onto a few entries in small samples. With ``n_sigma ==
    width_n_sigma`` the result is that core fit's mean. NaN for fewer than :data:`MIN_PEAK_ENTRIES` entries, a
    failed width fit or fewer than 10 entries in a window.
    """
    x = _finite(x)
    if len(x) < MIN_PEAK_ENTRIES:
        return float("nan")
    mean, sigma = gaussian_core_fit(x, n_sigma=width_n_sigma, n_iter=20)
    mu, sig = mean.value, sigma.value
    if not (np.isfinite(mu) and np.isfinite(sig) and sig > 0):
        return float("nan")
    if n_sigma == width_n_sigma:
        return float(mu)
    for _ in range(n_iter):
        a, b = mu - n_sigma * sig, mu + n_sigma * sig
        xs = x[(x >= a) & (x <= b)]
        if len(xs) < 10:
            return float("nan")

        def nll(m: float, xs=xs, a=a, b=b) -> float:
            return float(np.sum(0.5 * ((xs - m) / sig) ** 2)
                         + len(xs) * np.log(max(special.ndtr((b - m) / sig) - special.ndtr((a - m) / sig), 1e-300)))

        new = float(optimize.minimize_scalar(nll, bounds=(a, b), method="bounded",
                                             options={"xatol": 1e-5 * sig}).x)
        done = abs(new - mu) < 1e-4 * sig
        mu = new
        if done:
            break
    return float(mu)
