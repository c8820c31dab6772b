"""Readout noise of the jet calorimeter drawn only where topo-clustering can see it.

The dense readout (:func:`lhcml.sim.jet_calo.readout_chunks`) draws one normal per cell and per
event, ``E = float64(σ_e(f32) · z(f32)) + T − sub`` (``T``: deposited energy, ``sub``: the mean
pileup subtracted, ``σ_e``: electronic noise; ``σ`` = electronic ⊕ pileup noise). For the
4-2-0 topo-clustering (:mod:`lhcml.sim.topoclusters`) an **empty** cell (``T = 0``) matters only
through

* its state — *active* iff ``|E|/σ`` passes the growth threshold ``g`` (2), i.e. iff ``z > a`` or
  ``z < b`` with ``a = (sub + g σ)/σ_e``, ``b = (sub − g σ)/σ_e``: a Bernoulli trial of probability
  ``p = Φ(b) + Φ(−a)`` (0.0455 for every cell at μ = 0);
* its value, if it is active (it may seed or grow a cluster), or if it ends up in a cluster as a
  perimeter cell (splitting and the cluster sums read it).

So this module draws, per event (:func:`read_event`): a full normal for every cell with a deposit
(as the dense readout); the active empty cells as a thinned Bernoulli process — candidates at
rate ``p_max = max p`` by geometric gaps (from exponential draws, :func:`_gap`), each kept with probability ``p / p_max`` — with values
from the normal truncated to the tails ``z < b`` or ``z > a`` (inverse CDF, :func:`ndtri`); and,
after the clusters have grown, a value for each inactive empty cell that a cluster took as a
perimeter cell (:func:`quiet_value`), drawn from the normal truncated to ``[b, a]``. Each cell's
value has the dense readout's distribution and cells stay independent, so for every statistical
average (the calibration tables included) the sparse readout is the dense one with another random
seed. The acceptance tests use the clustering's own arithmetic (``|E|/σ > g`` on the float32
product), so a drawn value always has the state it was drawn for; the continuous ``p`` and the
rounded test differ by rounding only (relative ~1e-8 of the threshold band).

The random numbers come from the batch's :class:`numpy.random.Generator`, passed into the
compiled code (numba draws from the same bit generator, advancing its state): a run is
deterministic in its seed and a resumed run reproduces it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
from scipy.special import ndtr

# --- inverse of the standard normal CDF ---------------------------------------------------------
# Rational approximations of P. J. Acklam (relative error < 1.15e-9, docs/references.md), then one
# Halley step on erfc, which brings it to double precision.
_A = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
      -3.066479806614716e01, 2.506628277459239e00)
_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
      -1.328068155288572e01)
_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
      4.374664141464968e00, 2.938163982698783e00)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
_P_LOW = 0.02425
_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)
#: smallest probability handed to :func:`ndtri` by the samplers (a uniform draw of exactly 0)
_P_TINY = 1e-300


@numba.njit(cache=True)
def _ndtri_lower(p):
    """Φ⁻¹(p) for 0 < p ≤ 0.5."""
    if p < _P_LOW:
        q = math.sqrt(-2.0 * math.log(p))
        x = (((((_C[0] * q + _C[1]) * q + _C[2]) * q + _C[3]) * q + _C[4]) * q + _C[5]) / (
            (((_D[0] * q + _D[1]) * q + _D[2]) * q + _D[3]) * q + 1.0)
    else:
        q = p - 0.5
        r = q * q
        x = (((((_A[0] * r + _A[1]) * r + _A[2]) * r + _A[3]) * r + _A[4]) * r + _A[5]) * q / (
            ((((_B[0] * r + _B[1]) * r + _B[2]) * r + _B[3]) * r + _B[4]) * r + 1.0)
    if p > 1e-306:  # Halley step (below, Φ(x) is denormal and exp(x²/2) near overflow: the rational part is kept)
        e = 0.5 * math.erfc(-x / _SQRT2) - p
        u = e * _SQRT2PI * math.exp(0.5 * x * x)
        x = x - u / (1.0 + 0.5 * x * u)
    return x


@numba.njit(cache=True)
def ndtri(p):
    """Inverse of the standard normal CDF, ``Φ⁻¹(p)`` (compiled; agrees with
    :func:`scipy.special.ndtri` to ~1e-15 relative). ``p ≤ 0``: −inf, ``p ≥ 1``: +inf."""
    if not (p > 0.0):
        return -np.inf if p == 0.0 or p < 0.0 else np.nan
    if p >= 1.0:
        return np.inf
    if p > 0.5:
        return -_ndtri_lower(1.0 - p)  # 1 − p is exact for p ≥ 0.5: the upper tail keeps its precision
    return _ndtri_lower(p)


# --- the noise model of a batch -----------------------------------------------------------------


@dataclass(frozen=True)
class SparseNoise:
    """Per-cell terms of the sparse readout of one batch (see the module doc)."""

    sigma: np.ndarray  # total noise σ (electronic ⊕ pileup): the clustering's significance unit
    noise32: np.ndarray  # electronic noise σ_e, float32 (as the dense readout multiplies it)
    sub: np.ndarray  # mean pileup energy subtracted (zeros without pileup)
    has_sub: bool
    grow_sigma: float  # the clustering's growth threshold g (|E|/σ > g: active)
    seed_sigma: float  # its seed threshold (E/σ > seed_sigma)
    lo_cdf: np.ndarray  # Φ(b): an empty cell is active below b ...
    hi_cdf: np.ndarray  # Φ(−a): ... or above a
    p_active: np.ndarray  # Φ(b) + Φ(−a)
    seed_cdf: np.ndarray  # Φ(−a_seed), a_seed = (sub + seed_sigma σ)/σ_e: an empty cell seeds above a_seed
    a: np.ndarray
    b: np.ndarray
    p_max: float


def sparse_noise_model(noise: np.ndarray, sigma: np.ndarray, sub: np.ndarray | None, grow_sigma: float,
                       seed_sigma: float) -> SparseNoise:
    """The :class:`SparseNoise` of cells with electronic noise ``noise``, total noise ``sigma``,
    mean pileup ``sub`` subtracted (``None``: none) and the clustering's growth and seed
    thresholds ``grow_sigma`` < ``seed_sigma``."""
    if not 0 < grow_sigma <= seed_sigma:
        raise ValueError(f"need 0 < growth threshold <= seed threshold (noise significances), got {grow_sigma}, "
                         f"{seed_sigma}")
    noise32 = np.asarray(noise).astype(np.float32)
    s_e = noise32.astype(np.float64)
    has_sub = sub is not None
    sub_a = np.asarray(sub, np.float64) if has_sub else np.zeros(len(s_e))
    sigma = np.asarray(sigma, np.float64)
    a = (sub_a + grow_sigma * sigma) / s_e
    b = (sub_a - grow_sigma * sigma) / s_e
    lo, hi = ndtr(b), ndtr(-a)
    p = lo + hi
    seed_cdf = ndtr(-(sub_a + seed_sigma * sigma) / s_e)
    return SparseNoise(sigma, noise32, sub_a, has_sub, float(grow_sigma), float(seed_sigma), lo, hi, p, seed_cdf, a, b,
                       float(p.max()))


# --- compiled draws -----------------------------------------------------------------------------


@numba.njit(cache=True)
def _noise_value(c, z, noise32, sub, has_sub):
    """The readout's arithmetic for an empty cell: float64(σ_e(f32) · z(f32)) (− sub)."""
    x = np.float64(noise32[c] * np.float32(z))
    if has_sub:
        x -= sub[c]
    return x


@numba.njit(cache=True)
def _is_active(x, sigma_c, grow_t):
    """The clustering's growth test (``|E|/σ > g``, :func:`lhcml.sim.topoclusters._topo_fill`)."""
    return abs(x / sigma_c) > grow_t


# (the draws are made in the loops of read_event and quiet_values themselves: a Generator handed
# on to a compiled helper that is not inlined costs ~50 ns per call in reference counting)


@numba.njit(cache=True, inline="always")
def _gap(x, inv_rate):
    """Geometric gap of a Bernoulli(p_max) process from ``x``, a standard exponential draw: cells
    skipped before the next candidate, ``floor(x / λ)`` with ``λ = −ln(1 − p_max)``
    (``inv_rate`` = 1/λ), so ``P(gap ≥ k) = P(x ≥ kλ) = (1 − p_max)^k`` exactly; returned as a
    float (it may exceed any int). (numpy's exponential is a ziggurat: ≈ 4 ns against ≈ 18 ns for
    a uniform and a ``log1p``, the inverse-CDF form used until December 4.)"""
    return x * inv_rate


@numba.njit(cache=True)
def gap_inv_rate(p_max):
    """``1/λ = −1/ln(1 − p_max)`` of :func:`_gap` (0 < p_max < 1)."""
    return -1.0 / math.log1p(-p_max)


@numba.njit(cache=True)
def _tail_z(c, u, lo_cdf):
    """``z`` of the normal truncated to ``z < b`` or ``z > a`` from ``u`` uniform on [0, p)."""
    if u < lo_cdf[c]:
        return ndtri(max(u, _P_TINY))
    return -ndtri(max(u - lo_cdf[c], _P_TINY))


#: an active empty cell whose uniform lies within this factor of the seed region gets its value at
#: once (the seed test is made on the rounded value); the others cannot seed (our margin)
_SEED_MARGIN = 1.001
#: ``mark`` of a cell: no value yet / a value / active, value pending (its uniform kept in ``e``)
NO_VALUE, VALUE, PENDING = 0, 1, 2


@numba.njit(cache=True)
def read_event(e, mark, touched, noise32, sub, has_sub, sigma, grow_t, lo_cdf, p_active, seed_cdf, p_max, rng):
    """Read out one event sparsely, in place on ``e`` (its deposited energy per cell on entry).

    Cells with a deposit get the dense readout's value (a normal draw; ``mark`` VALUE). Active
    empty cells are a Bernoulli process of rate ``p_active`` (candidates at rate ``p_max`` by
    geometric gaps, each kept with ``p_active / p_max``) with a uniform ``u`` on [0, p) that
    fixes their value in the tails (:func:`_tail_z`): those that may seed get it at once
    (VALUE), the others — almost all: they can only grow a cluster — keep ``u`` in ``e`` (PENDING)
    until a cluster reaches them (:func:`finish_values`). All are listed in ``touched``
    (increasing). Every other cell keeps 0 and NO_VALUE. Returns the number of touched cells.
    """
    n = e.shape[0]
    nt = 0
    nxt = n
    inv_rate = 0.0
    if p_max > 0:
        inv_rate = gap_inv_rate(p_max)
        g = _gap(rng.standard_exponential(), inv_rate)
        nxt = n if g >= n else int(g)
    # the cells with a deposit listed first, without a branch, at the end of ``touched`` (increasing
    # from ``j``); then deposits and candidates in increasing cell order — the same draws in the
    # same order as one pass over every cell, without its unpredictable branch per cell. The list
    # is never overwritten before it is read: ``nt`` ≤ (deposits read) + (empty cells before the
    # current deposit) ≤ its position.
    j = n
    for c in range(n - 1, -1, -1):
        j -= 1
        touched[j] = c
        j += e[c] == 0.0
    while True:
        cd = touched[j] if j < n else n  # the next cell with a deposit
        while nxt < cd:  # a candidate on an empty cell
            c = nxt
            u = rng.random() * p_max  # uniform on [0, p_max): kept with p / p_max, then uniform on [0, p)
            if u < p_active[c]:
                if u >= lo_cdf[c] and u - lo_cdf[c] < _SEED_MARGIN * seed_cdf[c]:
                    e[c] = _active_value(c, u, noise32, sub, has_sub, sigma, grow_t, lo_cdf, p_active, rng)
                    mark[c] = VALUE
                else:
                    e[c] = u
                    mark[c] = PENDING
                touched[nt] = c
                nt += 1
            g = _gap(rng.standard_exponential(), inv_rate)
            nxt = n if g >= n - c else c + 1 + int(g)
        if cd == n:
            break
        c = cd
        x = np.float64(noise32[c] * np.float32(rng.standard_normal())) + e[c]
        if has_sub:
            x -= sub[c]
        e[c] = x
        mark[c] = VALUE
        touched[nt] = c
        nt += 1
        j += 1
        if c == nxt:  # a candidate on a cell with a deposit: only its gap is drawn
            g = _gap(rng.standard_exponential(), inv_rate)
            nxt = n if g >= n - c else c + 1 + int(g)
    return nt


@numba.njit(cache=True)
def _active_value(c, u, noise32, sub, has_sub, sigma, grow_t, lo_cdf, p_active, rng):
    """The value of an active empty cell from its uniform ``u`` (tails, :func:`_tail_z`), redrawn
    in the rare case the rounded value fails the growth test. (The Generator is used only then.)"""
    x = _noise_value(c, _tail_z(c, u, lo_cdf), noise32, sub, has_sub)
    while not _is_active(x, sigma[c], grow_t):
        x = _noise_value(c, _tail_z(c, rng.random() * p_active[c], lo_cdf), noise32, sub, has_sub)
    return x


@numba.njit(cache=True)
def finish_values(e, cells, mark, noise32, sub, has_sub, sigma, grow_t, lo_cdf, p_active, rng):
    """A value for each of ``cells`` (a cluster's cells) that has none, in place on ``e``: PENDING
    cells from their kept uniform (:func:`_active_value`); NO_VALUE cells (inactive, empty) the
    readout's value conditioned on failing the growth test — by rejection from the normal where
    that passes most draws, else by the inverse CDF of the normal truncated to ``[b, a]``, both on
    the rounded value. ``mark`` becomes VALUE."""
    for c in cells:
        m = mark[c]
        if m == VALUE:
            continue
        if m == PENDING:
            x = _active_value(c, e[c], noise32, sub, has_sub, sigma, grow_t, lo_cdf, p_active, rng)
        elif p_active[c] < 0.5:
            x = _noise_value(c, rng.standard_normal(), noise32, sub, has_sub)
            while _is_active(x, sigma[c], grow_t):
                x = _noise_value(c, rng.standard_normal(), noise32, sub, has_sub)
        else:
            w = 1.0 - p_active[c]
            x = _noise_value(c, ndtri(lo_cdf[c] + rng.random() * w), noise32, sub, has_sub)
            while _is_active(x, sigma[c], grow_t):
                x = _noise_value(c, ndtri(lo_cdf[c] + rng.random() * w), noise32, sub, has_sub)
        e[c] = x
        mark[c] = VALUE
