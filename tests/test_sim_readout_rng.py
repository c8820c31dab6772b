"""The sparse readout's random numbers (lhcml.sim.cell_noise) after the faster draws of December 4.

The candidates of active empty cells are placed by geometric gaps drawn from exponentials
(``floor(x / λ)``, ``λ = −ln(1 − p_max)``) instead of a uniform and a ``log1p`` each: another
random stream, the same distribution. Checked on noise-only cells (every noise class, with and
without a mean pileup subtracted), each against its exact expectation, and each check shown to
fail for a deliberately wrong readout:

* the gaps between candidates are geometric with ``p_max`` (χ² over the gap lengths, mean gap), and the
  number of active cells per event has the binomial mean and variance — a gap drawn with rate
  ``p`` instead of ``−ln(1 − p)`` (2.3 % too few candidates) fails;
* with a mean pileup subtracted (``p`` differs from cell to cell, candidates thinned by
  ``p / p_max``), each cell class is active at its own ``p_active`` (χ²) — a readout whose
  candidate rate is 10 % low fails;
* every cell's value, once all are read (active ones from the tails, the others on request),
  has zero mean, the configured σ, and the Gaussian tail fractions above 2σ and 4σ — a readout
  built with a σ 3 % off fails.

And the readout's loop (deposits listed first without a branch per cell, then deposits and
candidates in cell order) reproduces the one-pass form it replaced draw for draw: the same values,
states, touched cells and generator state, bit for bit.
"""

from __future__ import annotations

import dataclasses

import numba
import numpy as np
import pytest
from scipy import stats
from scipy.special import ndtr

from lhcml.sim.cell_noise import (
    _SEED_MARGIN,
    NO_VALUE,
    PENDING,
    VALUE,
    _active_value,
    _gap,
    finish_values,
    gap_inv_rate,
    read_event,
    sparse_noise_model,
)

#: electronic noise per cell class (GeV; the shipped EM barrel/end-cap, Tile, HEC, FCal values)
NOISE = np.array([0.02, 0.03, 0.05, 0.2, 0.4, 0.6])


def _read(model, n_ev, seed, finish_all=False):
    """Sparse readout of ``n_ev`` events of empty cells: per event the touched cells; with
    ``finish_all`` also a value for every cell (x / σ, (n_ev, n_cells))."""
    n = len(model.sigma)
    rng = np.random.default_rng(seed)
    e = np.zeros(n)
    mark = np.zeros(n, np.int8)
    touched = np.empty(n, np.int64)
    every = np.arange(n)
    events, values = [], []
    for _ in range(n_ev):
        e[:] = 0.0
        nt = read_event(e, mark, touched, model.noise32, model.sub, model.has_sub, model.sigma, model.grow_sigma,
                        model.lo_cdf, model.p_active, model.seed_cdf, model.p_max, rng)
        events.append(touched[:nt].copy())
        if finish_all:
            finish_values(e, every, mark, model.noise32, model.sub, model.has_sub, model.sigma, model.grow_sigma,
                          model.lo_cdf, model.p_active, rng)
            values.append(e / model.sigma)
        mark[:] = NO_VALUE
    return events, (np.array(values) if finish_all else None)


def _gaps_geometric(gaps: np.ndarray, p: float, k_max: int = 80) -> bool:
    """The gap lengths follow the geometric law ``P(k) = p (1 − p)^k`` (k ≥ 0): χ² over the
    lengths (the last bin holds k ≥ k_max) with p-value > 10⁻³, and the mean ``(1 − p)/p``
    within 4 standard errors (the sharper test of a rate)."""
    obs = np.bincount(np.minimum(gaps, k_max), minlength=k_max + 1)
    pmf = p * (1 - p) ** np.arange(k_max + 1)
    pmf[-1] = (1 - p) ** k_max
    chi2_ok = stats.chisquare(obs, pmf * len(gaps)).pvalue > 1e-3
    mean_ok = abs(gaps.mean() - (1 - p) / p) < 4 * np.sqrt(1 - p) / p / np.sqrt(len(gaps))
    return chi2_ok and mean_ok


def test_gap_is_exact_geometric_from_an_exponential():
    # P(gap >= k) = exp(-k λ) = (1 - p)^k: the quantiles of the exponential map onto the geometric law
    p = 0.0455
    inv = gap_inv_rate(p)
    assert inv == -1.0 / np.log1p(-p)
    for k in (1, 5, 50):
        x = -np.log((1 - p) ** k)  # the exponential quantile with P(X >= x) = (1 - p)^k
        assert int(_gap(x * (1 + 1e-12), inv)) == k and int(_gap(x * (1 - 1e-12), inv)) == k - 1


def test_candidates_are_a_bernoulli_process_and_a_wrong_rate_fails():
    n_ev = 600
    model = sparse_noise_model(np.repeat(NOISE, 500), np.repeat(NOISE, 500), None, 2.0, 4.0)
    n = len(model.sigma)
    p = 2 * ndtr(-2.0)  # mu = 0: every empty cell is active with this probability; all candidates kept
    assert np.allclose(model.p_active, p) and model.p_max == model.p_active.max()
    events, _ = _read(model, n_ev, 11)
    gaps = np.concatenate([np.diff(np.concatenate([[-1], t])) - 1 for t in events])
    counts = np.array([len(t) for t in events])
    assert _gaps_geometric(gaps, p)
    # active cells per event: binomial mean (4 standard errors) and variance (χ² interval)
    assert abs(counts.mean() - n * p) < 4 * np.sqrt(n * p * (1 - p) / n_ev)
    var_ratio = counts.var(ddof=1) / (n * p * (1 - p))
    lo, hi = stats.chi2.ppf([1e-3, 1 - 1e-3], n_ev - 1) / (n_ev - 1)
    assert lo < var_ratio < hi
    # the same check on gaps drawn with rate p instead of -ln(1 - p) (2.3 % too long on average) fails
    wrong = np.floor(np.random.default_rng(12).standard_exponential(len(gaps)) / p).astype(np.int64)
    assert not _gaps_geometric(wrong, p)


def test_thinned_candidates_give_each_cell_its_own_probability_and_a_low_rate_fails():
    noise = np.repeat(NOISE, 300)
    k = np.arange(len(noise)) % 3
    sigma = np.sqrt(noise**2 + (np.array([0.3, 1.0, 0.45])[k] * noise) ** 2)
    sub = np.array([0.2, 1.0, 4.0])[k] * noise  # p_active from 0.05 to 0.9: thinning at work
    model = sparse_noise_model(noise, sigma, sub, 2.0, 4.0)
    n_ev = 60
    classes = np.unique(model.p_active, return_inverse=True)[1]

    def chi2_p(m):
        events, _ = _read(m, n_ev, 21)
        hits = np.bincount(np.concatenate(events), minlength=len(noise))
        obs = np.bincount(classes, weights=hits)
        n_cls = np.bincount(classes) * n_ev
        expect = np.bincount(classes, weights=model.p_active) * n_ev
        # each class: binomial; the sum of squared pulls is χ² with one degree per class
        chi2 = np.sum((obs - expect) ** 2 / (expect * (1 - expect / n_cls)))
        return stats.chi2.sf(chi2, len(obs))

    assert chi2_p(model) > 1e-3
    # candidates 10 % too rare (p_max low, so every candidate is kept with p / p_max too small)
    assert chi2_p(dataclasses.replace(model, p_max=0.9 * model.p_max)) < 1e-3


def _moments_ok(values: np.ndarray) -> tuple[bool, ...]:
    """Zero mean, unit σ and the Gaussian fractions beyond ±2 and above 4 of x / σ (pooled over
    the cells of one noise class), each within 4 standard errors."""
    n = values.size
    mean_ok = abs(values.mean()) < 4 / np.sqrt(n)
    sd_ok = abs(values.std() - 1) < 4 / np.sqrt(2 * n)
    f2 = np.mean(np.abs(values) > 2)
    p2 = 2 * ndtr(-2.0)
    tail2_ok = abs(f2 - p2) < 4 * np.sqrt(p2 * (1 - p2) / n)
    k4 = int(np.sum(values > 4))
    tail4_ok = stats.poisson.cdf(k4, n * ndtr(-4.0)) > 1e-4 and stats.poisson.sf(k4 - 1, n * ndtr(-4.0)) > 1e-4
    return mean_ok, sd_ok, tail2_ok, tail4_ok


def test_every_cell_has_the_configured_noise_and_a_wrong_sigma_fails():
    noise = np.repeat(NOISE, 400)
    cls = np.repeat(np.arange(len(NOISE)), 400)
    model = sparse_noise_model(noise, noise, None, 2.0, 4.0)
    _, x = _read(model, 150, 31, finish_all=True)  # x / σ of every cell
    for c in range(len(NOISE)):
        assert all(_moments_ok(x[:, cls == c])), (NOISE[c], _moments_ok(x[:, cls == c]))
    # a readout drawing σ_e 3 % too large (the clustering still dividing by the configured σ) fails
    bad = sparse_noise_model(noise * 1.03, noise, None, 2.0, 4.0)
    _, xb = _read(bad, 150, 31, finish_all=True)
    fails = [not all(_moments_ok(xb[:, cls == c])) for c in range(len(NOISE))]
    assert all(fails)


@numba.njit
def _read_one_pass(e, mark, touched, noise32, sub, has_sub, sigma, grow_t, lo_cdf, p_active, seed_cdf, p_max, rng):
    """``read_event`` as written until December 4 (one pass over every cell, a branch per cell): the
    reference the two-pass form (deposits listed first) must reproduce draw for draw."""
    n = e.shape[0]
    nt = 0
    nxt = n
    inv_rate = 0.0
    if p_max > 0:
        inv_rate = gap_inv_rate(p_max)
        g = _gap(rng.standard_exponential(), inv_rate)
        nxt = n if g >= n else int(g)
    for c in range(n):
        x = e[c]
        if x != 0.0:
            x = np.float64(noise32[c] * np.float32(rng.standard_normal())) + x
            if has_sub:
                x -= sub[c]
            e[c] = x
            mark[c] = VALUE
            touched[nt] = c
            nt += 1
        elif c == nxt:
            u = rng.random() * p_max
            if u < p_active[c]:
                if u >= lo_cdf[c] and u - lo_cdf[c] < _SEED_MARGIN * seed_cdf[c]:
                    e[c] = _active_value(c, u, noise32, sub, has_sub, sigma, grow_t, lo_cdf, p_active, rng)
                    mark[c] = VALUE
                else:
                    e[c] = u
                    mark[c] = PENDING
                touched[nt] = c
                nt += 1
        if c == nxt:
            g = _gap(rng.standard_exponential(), inv_rate)
            nxt = n if g >= n - c else c + 1 + int(g)
    return nt


@pytest.mark.parametrize("with_sub", [False, True])
def test_two_pass_readout_is_the_one_pass_readout_bit_for_bit(with_sub):
    # deposits on 0 %, 15 % (μ = 0 tt̄-like), 80 % and 100 % of the cells, in runs and scattered, with
    # −0.0 (no deposit) and deposits on candidate cells; with and without a mean pileup subtracted
    # (thinned candidates; p_active up to 0.9, so candidates crowd and every branch is taken)
    noise = np.repeat(NOISE, 300)
    k = np.arange(len(noise)) % 3
    sigma = np.sqrt(noise**2 + (np.array([0.3, 1.0, 0.45])[k] * noise) ** 2) if with_sub else noise
    sub = np.array([0.2, 1.0, 4.0])[k] * noise if with_sub else None
    model = sparse_noise_model(noise, sigma, sub, 2.0, 4.0)
    n = len(noise)
    args = (model.noise32, model.sub, model.has_sub, model.sigma, model.grow_sigma, model.lo_cdf, model.p_active,
            model.seed_cdf)
    gen = np.random.default_rng(41)
    for frac in (0.0, 0.15, 0.8, 1.0):
        for p_max in (model.p_max, 0.0):
            dep = np.where(gen.random(n) < frac, gen.exponential(0.5, n), 0.0)
            dep[:40] = 1.0  # a run at the start and one at the end
            dep[-40:] = 2.0
            dep[gen.integers(0, n, 30)] = -0.0
            out = []
            for read in (read_event, _read_one_pass):
                e = dep.copy()
                mark = np.zeros(n, np.int8)
                touched = np.full(n, -7, np.int64)
                rng = np.random.default_rng(43)
                nt = read(e, mark, touched, *args, p_max, rng)
                out.append((e, mark, touched[:nt].copy(), rng.random()))  # the stream continues alike
            (e1, m1, t1, r1), (e2, m2, t2, r2) = out
            assert np.array_equal(e1.view(np.int64), e2.view(np.int64)), (frac, p_max)
            assert np.array_equal(m1, m2) and np.array_equal(t1, t2) and r1 == r2
            assert np.all(np.diff(t1) > 0)
            assert np.count_nonzero(m1 == VALUE) >= np.count_nonzero(dep)
