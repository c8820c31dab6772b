"""Metrics of generated calorimeter showers, as the CaloChallenge defines them (pure functions).

* :func:`separation_power`: ``S = 1/2 sum_i (h1_i - h2_i)^2 / (h1_i + h2_i)`` on normalised
  histograms (0: identical, 1: disjoint; docs/references.md §14);
* :func:`high_level_features`: per shower the incident energy, total energy, ``E_gen/E_inc``,
  per-layer energies, energy-weighted centroids and widths in both coordinates of the binning
  (Δη/Δφ for lhcml's cell binnings, x/y mm for the challenge's polar binnings) and the sparsity
  (fraction of voxels above a threshold) per layer;
* :func:`classifier_jsd`: the challenge's Jensen-Shannon estimate from a calibrated classifier,
  ``JSD = (ln 2 - BCE) / ln 2`` (in bits: 0 for indistinguishable, 1 for separable);
* :func:`frechet_distance`, :func:`fpd`, :func:`kpd`: Kansal et al.'s Fréchet and kernel physics
  distances on high-level features (docs/references.md §14): FPD is the Fréchet distance of
  Gaussians fitted to the two feature sets, extrapolated to infinite samples from a linear fit
  in 1/N (the finite-sample bias falls as 1/N); KPD the unbiased MMD² with the cubic polynomial
  kernel ``k(x, y) = (x.y / d + 1)^3``, median and half the inter-quartile range over batches.
  Features are divided by the reference's standard deviation first (features constant in both
  samples are dropped).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

#: histogram bins of the separation powers (our choice; the challenge fixes bins per dataset)
N_BINS = 50


def separation_power(h1: np.ndarray, h2: np.ndarray) -> float:
    """``1/2 sum (h1 - h2)^2 / (h1 + h2)`` of two histograms, each normalised to unit sum."""
    a = np.asarray(h1, np.float64)
    b = np.asarray(h2, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"histograms have different shapes {a.shape} and {b.shape}")
    if a.sum() <= 0 or b.sum() <= 0:
        raise ValueError("separation power of an empty histogram")
    a = a / a.sum()
    b = b / b.sum()
    s = a + b
    nz = s > 0
    return float(0.5 * np.sum((a[nz] - b[nz]) ** 2 / s[nz]))


def feature_bins(ref: np.ndarray, gen: np.ndarray | None = None, n_bins: int = N_BINS, log: bool | None = None) -> np.ndarray:
    """Bin edges for a feature: the reference's 0.1-99.9 % range (both samples where given),
    logarithmic when all values are positive and span more than a factor 100 (``log=None``)."""
    x = np.asarray(ref, np.float64)
    x = x[np.isfinite(x)]
    if gen is not None:
        g = np.asarray(gen, np.float64)
        x = np.concatenate([x, g[np.isfinite(g)]])
    if len(x) == 0:
        return np.linspace(0, 1, n_bins + 1)
    lo, hi = np.quantile(x, [0.001, 0.999])
    if log is None:
        log = bool(lo > 0 and hi / lo > 100)
    if hi <= lo:
        lo, hi = lo - 0.5 * max(abs(lo), 1e-9), hi + 0.5 * max(abs(hi), 1e-9)
    if log and lo > 0:
        return np.geomspace(lo, hi, n_bins + 1)
    return np.linspace(lo, hi, n_bins + 1)


def histogram(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts in ``edges`` with under- and overflow put into the first and last bins."""
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    return np.histogram(np.clip(x, edges[0], edges[-1]), bins=edges)[0].astype(np.float64)


def feature_separation(ref: np.ndarray, gen: np.ndarray, n_bins: int = N_BINS) -> float:
    """Separation power of one feature, binned with :func:`feature_bins` of both samples."""
    edges = feature_bins(ref, gen, n_bins)
    return separation_power(histogram(ref, edges), histogram(gen, edges))


def _moments(showers: np.ndarray, coord: np.ndarray, sl: slice) -> tuple[np.ndarray, np.ndarray]:
    w = np.clip(showers[:, sl].astype(np.float64), 0.0, None)  # negative (noise) voxels carry no weight
    s = w.sum(axis=1)
    safe = np.where(s > 0, s, 1.0)
    c = (w * coord[sl]).sum(axis=1) / safe
    m2 = (w * coord[sl] ** 2).sum(axis=1) / safe
    width = np.sqrt(np.clip(m2 - c**2, 0.0, None))
    return np.where(s > 0, c, 0.0), np.where(s > 0, width, 0.0)


def high_level_features(
    energies_gev: np.ndarray, showers_gev: np.ndarray, layer_slices: Sequence[slice], layer_names: Sequence[str],
    centres: tuple[np.ndarray, np.ndarray], coordinate_names: tuple[str, str] = ("eta", "phi"),
    sparsity_threshold_gev: float = 0.0,
) -> dict[str, np.ndarray]:  # fmt: skip
    """The challenge's high-level features of each shower (module docstring).

    Parameters
    ----------
    energies_gev, showers_gev
        ``[N]`` incident energies and ``[N, V]`` voxels.
    layer_slices, layer_names
        Voxel slice and name of each layer (``Binning.layer_slices``, ``Binning.layer_names``).
    centres
        Voxel centres in the two coordinates (``Binning.voxel_centres()``).
    sparsity_threshold_gev
        A voxel counts as hit above this energy (0: any positive energy, as the challenge).

    Returns
    -------
    dict
        ``E_inc``, ``E_tot``, ``E_ratio`` (E_tot/E_inc) and per layer ``E_<layer>``,
        ``centroid_<c>_<layer>``, ``width_<c>_<layer>`` for both coordinates ``c`` and
        ``sparsity_<layer>``.
    """
    sh = np.asarray(showers_gev, np.float64)
    e = np.asarray(energies_gev, np.float64).reshape(-1)
    out: dict[str, np.ndarray] = {"E_inc": e, "E_tot": sh.sum(axis=1)}
    out["E_ratio"] = out["E_tot"] / np.where(e > 0, e, 1.0)
    cx, cy = (np.asarray(c, np.float64) for c in centres)
    for sl, name in zip(layer_slices, layer_names, strict=True):
        out[f"E_{name}"] = sh[:, sl].sum(axis=1)
        for coord, cname in ((cx, coordinate_names[0]), (cy, coordinate_names[1])):
            c, w = _moments(sh, coord, sl)
            out[f"centroid_{cname}_{name}"] = c
            out[f"width_{cname}_{name}"] = w
        out[f"sparsity_{name}"] = (sh[:, sl] > sparsity_threshold_gev).mean(axis=1)
    return out


def separation_powers(ref: dict[str, np.ndarray], gen: dict[str, np.ndarray], n_bins: int = N_BINS) -> dict[str, float]:
    """Separation power of every feature both dicts hold except ``E_inc`` (the condition)."""
    return {k: feature_separation(ref[k], gen[k], n_bins) for k in ref if k in gen and k != "E_inc"}


def classifier_jsd(labels: np.ndarray, probabilities: np.ndarray, eps: float = 1e-7) -> float:
    """The challenge's JSD estimate ``(ln 2 - BCE) / ln 2`` from calibrated probabilities."""
    y = np.asarray(labels, np.float64)
    p = np.clip(np.asarray(probabilities, np.float64), eps, 1 - eps)
    bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    return float((np.log(2.0) - bce) / np.log(2.0))


# ------------------------------------------------------------------------------------------------
# FPD / KPD (Kansal et al.)
# ------------------------------------------------------------------------------------------------


def frechet_gaussian(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Fréchet (2-Wasserstein²) distance of two Gaussians:
    ``|mu1 - mu2|^2 + Tr(C1 + C2 - 2 (C1 C2)^(1/2))``."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    c1, c2 = np.atleast_2d(cov1), np.atleast_2d(cov2)
    with warnings.catch_warnings():  # near-singular products (features rarely non-zero): checked below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean, _ = linalg.sqrtm(c1 @ c2, disp=False)
    if not np.isfinite(covmean).all():
        off = np.eye(len(c1)) * 1e-6
        covmean = linalg.sqrtm((c1 + off) @ (c2 + off))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(c1) + np.trace(c2) - 2 * np.trace(covmean))


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to samples ``x`` ``[N, d]`` and ``y`` ``[M, d]``."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    return frechet_gaussian(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))


def _scale(real: np.ndarray, gen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    real = np.asarray(real, np.float64)
    gen = np.asarray(gen, np.float64)
    if real.ndim != 2 or gen.ndim != 2 or real.shape[1] != gen.shape[1]:
        raise ValueError(f"features must be [N, d] with the same d, got {real.shape} and {gen.shape}")
    sd = real.std(axis=0)
    keep = (sd > 0) | (gen.std(axis=0) > 0)  # a feature constant in both carries no information
    sd = np.where(sd > 0, sd, 1.0)
    return real[:, keep] / sd[keep], gen[:, keep] / sd[keep]


def fpd(
    real: np.ndarray, gen: np.ndarray, *, min_samples: int | None = None, max_samples: int | None = None,
    num_points: int = 10, num_batches: int = 10, seed: int = 42, normalise: bool = True,
) -> tuple[float, float]:  # fmt: skip
    """Fréchet physics distance (value, error): FD at ``num_points`` sample sizes between
    ``min_samples`` and ``max_samples`` (each the mean of ``num_batches`` draws without
    replacement), fitted linearly in 1/N and extrapolated to 1/N = 0; the error is the fit's
    intercept uncertainty. Defaults: ``max_samples`` the smaller sample, ``min_samples`` half of it."""
    if normalise:
        real, gen = _scale(real, gen)
    n_max = min(len(real), len(gen)) if max_samples is None else min(int(max_samples), len(real), len(gen))
    n_min = max(n_max // 2, 2) if min_samples is None else int(min_samples)
    if n_min < 2 or n_max <= n_min:
        raise ValueError(f"FPD needs more samples (min {n_min}, max {n_max})")
    rng = np.random.default_rng(seed)
    ns = np.linspace(n_min, n_max, num_points).astype(int)
    vals = []
    for n in ns:
        fd = [frechet_distance(real[rng.choice(len(real), n, replace=False)],
                               gen[rng.choice(len(gen), n, replace=False)]) for _ in range(num_batches)]  # fmt: skip
        vals.append(np.mean(fd))
    x = 1.0 / ns
    coef, cov = np.polyfit(x, np.asarray(vals), 1, cov=True)
    return float(coef[1]), float(np.sqrt(max(cov[1, 1], 0.0)))


def mmd2_poly_unbiased(x: np.ndarray, y: np.ndarray, degree: int = 3) -> float:
    """Unbiased MMD² with the kernel ``(x.y / d + 1)^degree`` (diagonal terms excluded)."""
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** degree
    kyy = (y @ y.T / d + 1) ** degree
    kxy = (x @ y.T / d + 1) ** degree
    m, n = len(x), len(y)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2 * kxy.mean())


def kpd(
    real: np.ndarray, gen: np.ndarray, *, num_batches: int = 10, batch_size: int = 5000, seed: int = 42,
    normalise: bool = True,
) -> tuple[float, float]:  # fmt: skip
    """Kernel physics distance: median and half the inter-quartile range of the unbiased MMD²
    (:func:`mmd2_poly_unbiased`) over ``num_batches`` batches of ``batch_size`` (capped at half
    the smaller sample, so that the batches differ) drawn without replacement."""
    if normalise:
        real, gen = _scale(real, gen)
    bs = min(int(batch_size), len(real) // 2, len(gen) // 2)  # at most half: batches differ
    if bs < 2:
        raise ValueError("KPD needs at least 2 samples on each side")
    rng = np.random.default_rng(seed)
    vals = np.array([
        mmd2_poly_unbiased(real[rng.choice(len(real), bs, replace=False)], gen[rng.choice(len(gen), bs, replace=False)])
        for _ in range(num_batches)
    ])  # fmt: skip
    q1, q3 = np.percentile(vals, [25, 75])
    return float(np.median(vals)), float((q3 - q1) / 2)


def feature_matrix(features: dict[str, np.ndarray], keys: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Stack features into ``[N, d]`` (all but ``E_inc`` by default) for FPD/KPD and the classifier."""
    keys = [k for k in features if k != "E_inc"] if keys is None else list(keys)
    return np.stack([np.asarray(features[k], np.float64) for k in keys], axis=1), keys


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Mean and standard deviation (ddof 1) of repeated measurements."""
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v))}
