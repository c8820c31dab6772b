"""Where a resonance's mass peak sits: three estimators of the position of a (skewed) peak and an
event bootstrap for their errors.

A groomed large-R top-jet mass distribution is flat-topped and skewed to the low side (semileptonic b
decays, lost radiation), so "the peak" depends on the estimator (``docs/benchmarks/sim_large_r.md``,
fourteenth version; ``docs/references.md`` §31, §35):

* :func:`gauss_core_peak` — the mean of a Gaussian fitted to the core ``mean ± n_sigma·σ`` and
  iterated (unbinned, the likelihood normalised on the window; σ from the ±2 σ core fit of
  :func:`lhcml.estimators.gaussian_core_fit`). The estimator ATLAS's MC-based calibrations use for an
  average response (§31), applied to the distribution itself; ``n_sigma = 1`` follows the top of the
  peak, larger windows are pulled towards the shoulder.
* :func:`crystal_ball_fit` — an unbinned maximum-likelihood fit of a Crystal Ball function (Gaussian
  core, power-law tail on the low side) on the central quantiles of the sample; its peak (mode) is the
  Gaussian part's mean. The skewed-peak-function fit: the low-side shoulder goes into the tail instead
  of pulling the core.
* :func:`kde_mode` — the maximum of a Gaussian kernel density (Silverman bandwidth of the central
  90 %): the literal most probable value, noisy on a flat top.

Pure functions on numpy arrays (no file I/O).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats
from scipy.special import expit, ndtr

from lhcml.errors import ConfigError
from lhcml.estimators import MIN_PEAK_ENTRIES, gauss_core_peak, robust_sigma

#: the estimators of :func:`mass_peak`
PEAK_METHODS = ("gauss_core", "crystal_ball", "kde_mode")
#: fewest finite entries an estimate is made from (fewer: NaN)
MIN_ENTRIES = MIN_PEAK_ENTRIES
#: :func:`gauss_core_peak` lives in :mod:`lhcml.estimators` (the simulation's in-situ-like JMS residual,
#: :mod:`lhcml.sim.large_r_calibration`, uses it too) and is re-exported here with the other peak estimators
__all__ = ["PEAK_METHODS", "MIN_ENTRIES", "gauss_core_peak", "kde_mode", "CrystalBallFit", "crystal_ball_fit",
           "mass_peak", "event_bootstrap"]


def _finite(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).ravel()
    return x[np.isfinite(x)]


def kde_mode(x: np.ndarray, step: float | None = None) -> float:
    """The maximum of a Gaussian kernel density estimate of ``x``.

    Bandwidth: Silverman's rule on the central 90 % (``0.9 · min(σ, IQR/1.34) · n^-1/5``); the
    density is evaluated on a grid of ``step`` (default 1/50 of the bandwidth) over the 5–95 %
    quantile range. NaN for fewer than :data:`MIN_ENTRIES` entries.
    """
    x = _finite(x)
    if len(x) < MIN_ENTRIES:
        return float("nan")
    q05, q95 = np.percentile(x, [5.0, 95.0])
    core = x[(x > q05) & (x < q95)]
    bw = 0.9 * min(core.std(), (np.percentile(core, 75) - np.percentile(core, 25)) / 1.34) * len(core) ** -0.2
    if not (np.isfinite(bw) and bw > 0):
        return float("nan")
    kde = stats.gaussian_kde(x, bw_method=bw / x.std(ddof=1))
    grid = np.arange(q05, q95 + 0.5 * (step or bw / 50), step or bw / 50)
    return float(grid[np.argmax(kde(grid))])


@dataclass(frozen=True)
class CrystalBallFit:
    """A Crystal Ball fit (:func:`crystal_ball_fit`): ``peak`` = the Gaussian core's mean (the
    function's mode), ``sigma`` its width, ``beta`` where the power-law tail starts (in σ below the
    peak), ``m`` the tail's power, ``n`` the entries in the fitted window, ``converged`` the
    optimiser's flag."""

    peak: float
    sigma: float
    beta: float
    m: float
    n: int
    converged: bool


def _crystal_ball_logpdf_unnormalised(t: np.ndarray, beta: float, m: float) -> np.ndarray:
    """log of the Crystal Ball shape at ``t = (x − peak)/σ``: ``−t²/2`` above ``−beta``, the power-law
    tail ``A (B − t)^-m`` below (``A = (m/β)^m e^(−β²/2)``, ``B = m/β − β``: continuous with its slope)."""
    b_ = m / beta - beta
    log_a = m * np.log(m / beta) - 0.5 * beta**2
    tail = t <= -beta
    out = -0.5 * t**2
    out[tail] = log_a - m * np.log(b_ - t[tail])
    return out


def _crystal_ball_integral(t1: float, t2: float, beta: float, m: float) -> float:
    """∫ of the unnormalised shape of :func:`_crystal_ball_logpdf_unnormalised` from ``t1`` to ``t2``."""
    total = 0.0
    g1 = max(t1, -beta)
    if t2 > g1:  # Gaussian part
        total += np.sqrt(2.0 * np.pi) * (ndtr(t2) - ndtr(g1))
    p2 = min(t2, -beta)
    if p2 > t1:  # power-law tail: ∫ A (B − t)^-m dt = A (B − t)^(1−m) / (m − 1)
        b_ = m / beta - beta
        log_a = m * np.log(m / beta) - 0.5 * beta**2  # with B − t ≥ m/β the products below stay finite
        total += (np.exp(log_a + (1.0 - m) * np.log(b_ - p2)) - np.exp(log_a + (1.0 - m) * np.log(b_ - t1))) / (m - 1.0)
    return float(total)


def crystal_ball_fit(x: np.ndarray, window: tuple[float, float] = (0.02, 0.90)) -> CrystalBallFit:
    """Unbinned maximum-likelihood fit of a Crystal Ball function to the entries of ``x`` between
    the ``window`` quantiles (likelihood normalised on that range).

    The function (the shape of :data:`scipy.stats.crystalball`) is a Gaussian of mean ``peak`` and width
    ``sigma`` above ``peak − beta·sigma`` and a power law ``∝ (B − t)^-m`` below it: a peak with a low-side
    tail or shoulder. The default window stops at the 90 % quantile: the high side of a groomed jet-mass
    peak has its own tail (pile-up, extra radiation) that a Gaussian side cannot describe and that would
    widen the core. Start: the KDE mode and IQR/1.349; ``beta`` in (0.05, 10), ``m`` in (1.01, 100); two
    starting tails (≈ 1 σ and ≈ 5 σ below the peak), the better likelihood kept.
    """
    x = _finite(x)
    nan = CrystalBallFit(float("nan"), float("nan"), float("nan"), float("nan"), len(x), False)
    if len(x) < MIN_ENTRIES:
        return nan
    lo, hi = np.percentile(x, [100.0 * window[0], 100.0 * window[1]])
    xs = x[(x >= lo) & (x <= hi)]
    mu0 = kde_mode(xs)
    s0 = robust_sigma(xs).value
    if not (np.isfinite(mu0) and np.isfinite(s0) and s0 > 0):
        return nan

    def unpack(p: np.ndarray) -> tuple[float, float, float, float]:
        return mu0 + p[0] * s0, s0 * np.exp(p[1]), 0.05 + 9.95 * expit(p[2]), 1.01 + 98.99 * expit(p[3])

    def nll(p: np.ndarray) -> float:
        mu, sig, beta, m = unpack(p)
        lp = _crystal_ball_logpdf_unnormalised((xs - mu) / sig, beta, m)
        norm = _crystal_ball_integral((lo - mu) / sig, (hi - mu) / sig, beta, m) * sig
        if not (norm > 0 and np.all(np.isfinite(lp))):
            return 1e300
        return float(-lp.sum() + len(xs) * np.log(norm))

    best = None
    for start in ((0.0, 0.0, -1.5, -2.0), (0.0, 0.0, 0.0, -1.0)):  # tails from ~1 σ and ~5 σ below the peak
        res = optimize.minimize(nll, np.array(start), method="Nelder-Mead",
                                options={"xatol": 1e-4, "fatol": 1e-4, "maxiter": 4000, "maxfev": 8000})
        if best is None or res.fun < best.fun:
            best = res
    mu, sig, beta, m = unpack(best.x)
    return CrystalBallFit(float(mu), float(sig), float(beta), float(m), len(xs), bool(best.success))


def mass_peak(x: np.ndarray, method: str = "gauss_core", **kwargs) -> float:
    """The peak of ``x`` by ``method`` (:data:`PEAK_METHODS`; ``kwargs`` go to that estimator:
    ``n_sigma`` for ``gauss_core``, ``window`` for ``crystal_ball``, ``step`` for ``kde_mode``)."""
    if method == "gauss_core":
        return gauss_core_peak(x, **kwargs)
    if method == "crystal_ball":
        return crystal_ball_fit(x, **kwargs).peak
    if method == "kde_mode":
        return kde_mode(x, **kwargs)
    raise ConfigError(f"unknown peak estimator '{method}'; valid: {', '.join(PEAK_METHODS)}")


def event_bootstrap(values: np.ndarray, events: np.ndarray, fn: Callable[[np.ndarray], float],
                    n_boot: int = 100, seed: int = 0) -> np.ndarray:
    """``fn`` of ``n_boot`` bootstrap resamples of ``values`` in which whole events are drawn with
    replacement (``events``: each entry's event id; all entries of a drawn event come along, as
    often as it is drawn). Returns the ``n_boot`` estimates (their standard deviation is the error)."""
    values = np.asarray(values)
    events = np.asarray(events)
    if values.shape[0] != events.shape[0]:
        raise ValueError(f"values ({values.shape[0]}) and events ({events.shape[0]}) differ in length")
    uniq, inv = np.unique(events, return_inverse=True)
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    for b in range(n_boot):
        w = np.bincount(rng.integers(0, len(uniq), len(uniq)), minlength=len(uniq))
        out[b] = fn(np.repeat(values, w[inv], axis=0))
    return out
