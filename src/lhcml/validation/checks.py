"""Validation quantities of a simulated (or real) sample: small pure functions on arrays.

Each function takes plain numpy arrays (the fields of the flat files, MeV and mm as stored) and
returns a :class:`Measurement` (value, statistical error, entries). They know nothing of files or
of the reference table: :mod:`lhcml.validation` reads the fields, calls these and compares
with ``reference.yaml``. Users can call them on their own arrays, e.g. real ATLAS
files in the dumper layout.

Estimators (stated once, used everywhere):

* **robust width** :func:`robust_sigma`: interquartile range / 1.349 (the σ of a Gaussian with
  that IQR); its statistical error is taken as ``0.787 σ / √n`` (the asymptotic error of the
  IQR estimator for a Gaussian).
* **Gaussian core fit** :func:`gaussian_core_fit`: the maximum-likelihood fit of a Gaussian to
  the entries within ``mean ± k σ`` (iterated until stable), with the likelihood normalised on
  that window — and, where entries are cut from below by a selection (jets need reconstructed
  pT above a threshold), on each entry's own accepted range. This removes the bias of a reco-pT
  threshold on the response of the lowest truth-pT bin.
* **median** errors ``1.2533 σ_robust / √n``; binomial errors ``√(p(1-p)/n)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

#: the σ of a unit Gaussian per unit of interquartile range: σ = IQR / 1.349
IQR_TO_SIGMA = 1.0 / 1.3489795
#: asymptotic statistical error of the IQR/1.349 width of a Gaussian, in units of σ/√n
_IQR_SIGMA_ERR = 0.787
#: asymptotic statistical error of the median of a Gaussian, in units of σ/√n (√(π/2))
_MEDIAN_ERR = 1.2533


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


def median(x: np.ndarray) -> Measurement:
    """Median of the finite entries with the error ``1.2533 σ_robust / √n``."""
    x = _finite(x)
    if len(x) == 0:
        return Measurement(float("nan"), float("nan"), 0, "median")
    s = robust_sigma(x).value if len(x) >= 4 else float("nan")
    return Measurement(float(np.median(x)), _MEDIAN_ERR * s / np.sqrt(len(x)), len(x), "median")


def mean(x: np.ndarray) -> Measurement:
    """Mean of the finite entries with its standard error."""
    x = _finite(x)
    if len(x) < 2:
        v = float(x[0]) if len(x) else float("nan")
        return Measurement(v, float("nan"), len(x), "mean")
    return Measurement(float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x))), len(x), "mean")


def fraction(passed: np.ndarray) -> Measurement:
    """Fraction of True entries with its binomial error."""
    passed = np.asarray(passed, dtype=bool).ravel()
    n = len(passed)
    if n == 0:
        return Measurement(float("nan"), float("nan"), 0, "fraction")
    p = float(passed.mean())
    return Measurement(p, float(np.sqrt(max(p * (1 - p), 1.0 / n) / n)), n, "fraction")


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


# ---- small-R jets ------------------------------------------------------------------------------


def jet_response(
    reco_pt: np.ndarray,
    truth_pt: np.ndarray,
    truth_eta: np.ndarray,
    pt_range_gev: tuple[float, float],
    eta_max: float = 0.8,
    reco_pt_min_gev: float | None = None,
    n_sigma: float = 2.0,
) -> tuple[Measurement, Measurement]:
    """Jet energy scale (mean response) and resolution (σ/mean) in one truth-pT bin.

    The response ``R = pT_reco / pT_truth`` of jets matched to a truth jet (``truth_pt > 0``) with
    ``pt_range_gev[0] <= pT_truth < pt_range_gev[1]`` and ``|η_truth| < eta_max`` is fitted by
    :func:`gaussian_core_fit`; ``reco_pt_min_gev`` is the sample's reconstructed-pT selection,
    folded into the fit as a per-jet truncation ``R > reco_pt_min / pT_truth``.

    Returns
    -------
    tuple[Measurement, Measurement]
        (response = fitted mean, JER = fitted σ / mean).
    """
    reco = np.asarray(reco_pt, dtype=np.float64) / 1e3
    truth = np.asarray(truth_pt, dtype=np.float64) / 1e3
    eta = np.asarray(truth_eta, dtype=np.float64)
    lo, hi = pt_range_gev
    sel = np.isfinite(reco) & (truth > 0) & (truth >= lo) & (truth < hi) & (np.abs(eta) < eta_max)
    r = reco[sel] / truth[sel]
    lower = None if reco_pt_min_gev is None else reco_pt_min_gev / truth[sel]
    m, s = gaussian_core_fit(r, n_sigma=n_sigma, lower=lower)
    if not np.isfinite(m.value):
        return m, s
    jer = s.value / m.value
    jer_err = jer * np.hypot(s.error / s.value, m.error / m.value)
    return m, Measurement(jer, float(jer_err), s.n, s.note + "; JER = σ/mean")


def prompt_lepton_fraction(
    flavour: np.ndarray, prompt_lepton: np.ndarray, removed: np.ndarray | None = None
) -> Measurement:
    """Fraction of light jets (``flavour == 0``) that are prompt leptons (``truthPromptLepton``).

    ``removed`` flags jets that the standard overlap removal drops (kept in the file for studies);
    they are not counted.
    """
    light = np.asarray(flavour) == 0
    if removed is not None:
        light &= ~np.asarray(removed, dtype=bool)
    return fraction(np.asarray(prompt_lepton, dtype=bool)[light])


# ---- large-R jets ------------------------------------------------------------------------------


def mass_peak(
    mass: np.ndarray,
    truth_mass: np.ndarray | None = None,
    n_sigma: float = 1.5,
    bin_gev: float = 2.0,
) -> tuple[Measurement, Measurement, Measurement]:
    """Peak position and relative width of a jet-mass distribution (masses in MeV).

    The starting point is the maximum of the mass histogram (``bin_gev`` bins, smoothed over three
    bins) between 0 and twice the median truth mass (or 400 GeV without truth mass); then a
    :func:`gaussian_core_fit` within ``±n_sigma σ`` starting from σ = 8 % of the peak.

    Returns
    -------
    tuple[Measurement, Measurement, Measurement]
        (peak [GeV], resolution σ/peak, peak − median truth mass [GeV]; NaN without truth mass).
    """
    m = _finite(np.asarray(mass, dtype=np.float64) / 1e3)
    m = m[m > 0]
    ref = float("nan")
    if truth_mass is not None:
        t = _finite(np.asarray(truth_mass, dtype=np.float64) / 1e3)
        t = t[t > 0]
        ref = float(np.median(t)) if len(t) else float("nan")
    nan = Measurement(float("nan"), float("nan"), len(m), "Gaussian core fit")
    if len(m) < 10:
        return nan, nan, nan
    top = 2.0 * ref if np.isfinite(ref) else 400.0
    counts, edges = np.histogram(m, bins=np.arange(0.0, top + bin_gev, bin_gev))
    smooth = np.convolve(counts, np.ones(3) / 3.0, mode="same")
    k = int(np.argmax(smooth))
    mode = 0.5 * (edges[k] + edges[k + 1])
    peak, sig = gaussian_core_fit(m, n_sigma=n_sigma, start=(mode, 0.08 * mode))
    if not np.isfinite(peak.value):
        return nan, nan, nan
    res = sig.value / peak.value
    res_err = res * np.hypot(sig.error / sig.value, peak.error / peak.value)
    delta = Measurement(peak.value - ref, peak.error, peak.n, peak.note + f"; truth mass {ref:.2f} GeV")
    return peak, Measurement(res, float(res_err), sig.n, sig.note + "; σ/peak"), delta


def median_shift(values: list[np.ndarray]) -> Measurement:
    """Largest |median_i − median_0| over samples ``1..`` (sample 0: the reference, e.g. μ = 0)."""
    meds = [median(v) for v in values]
    if len(meds) < 2 or not np.isfinite(meds[0].value):
        return Measurement(float("nan"), float("nan"), 0, "needs two samples")
    shifts = [abs(m.value - meds[0].value) for m in meds[1:]]
    i = int(np.nanargmax(shifts)) + 1
    err = float(np.hypot(meds[i].error, meds[0].error))
    note = "medians " + ", ".join(f"{m.value:.3f}" for m in meds)
    return Measurement(float(shifts[i - 1]), err, min(m.n for m in meds), note)


# ---- tracks and vertices -----------------------------------------------------------------------


def ip_pull_width(ip: np.ndarray, sigma: np.ndarray) -> Measurement:
    """Robust width (IQR/1.349) of ``ip / sigma`` (e.g. d0 / σ(d0) of primary tracks)."""
    ip = np.asarray(ip, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    ok = np.isfinite(ip) & np.isfinite(sigma) & (sigma > 0)
    m = robust_sigma(ip[ok] / sigma[ok])
    return Measurement(m.value, m.error, m.n, "IQR/1.349 of IP/σ(IP)")


def vertex_resolution_um(reco_z: np.ndarray, truth_z: np.ndarray, chosen_hs: np.ndarray | None = None) -> Measurement:
    """Robust width (IQR/1.349, µm) of reco − truth hard-scatter vertex z (mm in)."""
    dz = (np.asarray(reco_z, dtype=np.float64) - np.asarray(truth_z, dtype=np.float64)) * 1e3
    if chosen_hs is not None:
        dz = dz[np.asarray(chosen_hs, dtype=bool)]
    m = robust_sigma(dz)
    return Measurement(m.value, m.error, m.n, "IQR/1.349 of z_reco − z_truth (hard-scatter vertex chosen)")


# ---- b/c hadrons -------------------------------------------------------------------------------

#: hadron mass (MeV) used to turn Lxy into c·τ: B± (b jets) and D± (c jets) [PDG]
CTAU_MASS = {5: 5279.0, 4: 1870.0}


def hadron_ctau(jets: np.ndarray, flavour: int) -> tuple[float, float, int]:
    """Mean proper decay length c·τ of the labelling hadrons, from their Lxy and pT.

    For an exponential decay, the transverse decay length has mean ``<Lxy> = c·τ · pT / m``, so
    ``<Lxy · m / pT>`` estimates c·τ (m: the B or D mass). Returns (c·τ [mm], its statistical
    error, number of hadrons).
    """
    m = CTAU_MASS[flavour]
    lxy = jets["HadronConeExclTruthLabelLxy"].astype(np.float64)
    pt = jets["HadronConeExclTruthLabelPt"].astype(np.float64)
    ok = np.isfinite(lxy) & np.isfinite(pt) & (pt > 0)
    x = lxy[ok] * m / pt[ok]
    if len(x) < 2:
        return float("nan"), float("nan"), int(len(x))
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x))), int(len(x))


# ---- photons -----------------------------------------------------------------------------------


def tight_efficiency(
    photons: np.ndarray, pt_range_gev: tuple[float, float], eta_max: float, prompt: bool = True
) -> Measurement:
    """Fraction of (prompt or fake) photon candidates passing the ATLAS 2012 Tight menu.

    Candidates with ``pt_range_gev[0] <= E_T < pt_range_gev[1]`` and ``|η| < eta_max``; the menu
    is :func:`lhcml.tasks.photon.cuts.atlas_2012_tight` (converted/unconverted by the
    ``converted`` flag).
    """
    from lhcml.tasks.photon.cuts import atlas_2012_tight  # the one copy of the menu

    pt = photons["pt"] / 1e3
    sel = (pt >= pt_range_gev[0]) & (pt < pt_range_gev[1]) & (np.abs(photons["eta"]) < eta_max)
    sel &= (photons["isPromptPhoton"] == 1) if prompt else (photons["isPromptPhoton"] == 0)
    m = fraction(atlas_2012_tight(photons[sel]))
    return Measurement(m.value, m.error, m.n, "ATLAS 2012 Tight (tasks/photon/cuts.py)")
