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

import numpy as np

from lhcml.estimators import (  # noqa: F401  (re-exported: the validation's estimators)
    IQR_TO_SIGMA,
    Measurement,
    _finite,
    _inverse_hessian,
    gaussian_core_fit,
    robust_sigma,
)

#: asymptotic statistical error of the median of a Gaussian, in units of σ/√n (√(π/2))
_MEDIAN_ERR = 1.2533


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
