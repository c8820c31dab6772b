"""Kinematic resampling of jet classes in (pT, |η|), as umami-preprocessing (UPP) does it.

Flavour taggers must not learn the jet kinematics that differ between classes (b-jets in tt̄ are
harder than light jets), so the training sample is resampled such that every class has the
same (pT, |η|) distribution as a *target* class. Three methods:

``countup``
    For each (pT, |η|) bin the wanted number of jets ``t = N · pdf_target(bin)`` is taken from the
    ``n`` jets available: every jet is used ``t // n`` times and a random ``t % n`` of them once
    more (so jets are used as evenly as possible: no jet is duplicated before all are used once).
``pdf``
    Importance sampling with replacement: ``t`` draws with replacement from the ``n`` jets of
    the bin (multinomial multiplicities), i.e. sampling from the target pdf.
``none``
    No resampling: every jet is kept once with a weight ``pdf_target(bin) / pdf_class(bin)``.

Everything here works on bin counts and per-jet multiplicities, so the caller can stream the
jets in chunks: the multiplicity of a jet is looked up from its position among the jets of its
(class, bin), see :func:`allocate_multiplicities`.
"""

from __future__ import annotations

import numpy as np

#: supported resampling methods
METHODS = ("countup", "pdf", "none")


def bin_jets(pt: np.ndarray, abs_eta: np.ndarray, pt_bins, eta_bins) -> np.ndarray:
    """Flat (pT, |η|) bin index of each jet; -1 for jets outside the binning.

    Bins are half-open ``[lo, hi)`` except the last one, which includes its upper edge.
    """
    pt_bins = np.asarray(pt_bins, dtype=float)
    eta_bins = np.asarray(eta_bins, dtype=float)
    ip = np.searchsorted(pt_bins, pt, side="right") - 1
    ie = np.searchsorted(eta_bins, abs_eta, side="right") - 1
    ip = np.where(pt == pt_bins[-1], len(pt_bins) - 2, ip)
    ie = np.where(abs_eta == eta_bins[-1], len(eta_bins) - 2, ie)
    n_eta = len(eta_bins) - 1
    ok = (ip >= 0) & (ip < len(pt_bins) - 1) & (ie >= 0) & (ie < n_eta)
    return np.where(ok, ip * n_eta + ie, -1).astype(np.int64)


def target_counts(target_hist: np.ndarray, n_total: int, available: np.ndarray) -> np.ndarray:
    """Integer counts per bin summing to ``n_total``, distributed like ``target_hist``.

    Bins where the class has no jet (``available == 0``) cannot be filled; the target pdf is
    renormalised over the bins the class populates. Rounding uses the largest-remainder method,
    so the counts sum exactly to ``n_total``.
    """
    hist = np.where(available > 0, np.asarray(target_hist, dtype=float), 0.0)
    if hist.sum() <= 0 or n_total <= 0:
        return np.zeros_like(hist, dtype=np.int64)
    exact = n_total * hist / hist.sum()
    counts = np.floor(exact).astype(np.int64)
    short = int(n_total - counts.sum())
    if short > 0:
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[:short]] += 1
    return counts


def allocate_multiplicities(
    available: np.ndarray, wanted: np.ndarray, method: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """How often each jet of each bin is written.

    Parameters
    ----------
    available
        ``(n_bins,)`` number of jets of this class in each bin (in stream order).
    wanted
        ``(n_bins,)`` number of jets to write per bin.
    method
        ``countup`` or ``pdf``.
    rng
        Random generator (seeded by the caller for reproducibility).

    Returns
    -------
    offsets, multiplicity
        ``multiplicity[offsets[b] + i]`` is how often the ``i``-th jet of bin ``b`` is written.
        ``multiplicity[offsets[b]:offsets[b+1]].sum() == wanted[b]`` wherever ``available[b] > 0``.
    """
    available = np.asarray(available, dtype=np.int64)
    wanted = np.asarray(wanted, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(available)])
    mult = np.zeros(int(offsets[-1]), dtype=np.int32)
    for b in np.nonzero(available)[0]:
        n, t = int(available[b]), int(wanted[b])
        if t == 0:
            continue
        sl = slice(offsets[b], offsets[b + 1])
        if method == "countup":
            m = np.full(n, t // n, dtype=np.int32)
            m[rng.choice(n, t % n, replace=False)] += 1
        elif method == "pdf":
            m = np.bincount(rng.integers(0, n, t), minlength=n).astype(np.int32)
        else:
            raise ValueError(f"unknown resampling method '{method}' (valid: countup, pdf)")
        mult[sl] = m
    return offsets, mult


def density_ratio(target_hist: np.ndarray, class_hist: np.ndarray) -> np.ndarray:
    """Per-bin weight ``pdf_target / pdf_class`` (0 where the class has no jets)."""
    t = np.asarray(target_hist, dtype=float)
    c = np.asarray(class_hist, dtype=float)
    pt = t / max(t.sum(), 1.0)
    pc = c / max(c.sum(), 1.0)
    return np.divide(pt, pc, out=np.zeros_like(pt), where=pc > 0)


def positions_in_groups(keys: np.ndarray, n_groups: int, start: np.ndarray) -> np.ndarray:
    """Running position of each element among earlier elements with the same key.

    ``start[k]`` is the number of elements with key ``k`` seen in earlier chunks; the result is
    ``start[key] + (number of earlier elements in this chunk with the same key)``.
    """
    keys = np.asarray(keys, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    first = np.searchsorted(sorted_keys, sorted_keys, side="left")
    rank_sorted = np.arange(len(keys)) - first
    pos = np.empty(len(keys), dtype=np.int64)
    pos[order] = rank_sorted
    return pos + start[keys]
