"""The sparse readout noise of the jet calorimeter (lhcml.sim.cell_noise) against the dense readout.

The sparse readout draws a value only for cells with a deposit, for the active empty cells
(|E|/σ above the growth threshold) and, on request, for inactive empty cells that a cluster takes
(perimeter cells). On noise-only cells its numbers must have the dense readout's distribution:
the number of active cells per event, their values and the perimeter values — and a readout built
for a wrong threshold (1.9 σ) must fail the same checks.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.special import ndtri as scipy_ndtri

from lhcml.sim.cell_noise import (
    NO_VALUE,
    PENDING,
    VALUE,
    finish_values,
    ndtri,
    read_event,
    sparse_noise_model,
)

#: electronic noise per cell class (GeV; the shipped EM barrel/end-cap, Tile, HEC, FCal values)
NOISE = np.array([0.02, 0.03, 0.05, 0.2, 0.4, 0.6])


def test_ndtri_matches_scipy():
    p = np.concatenate([10.0 ** -np.linspace(1, 300, 600), np.linspace(1e-3, 1 - 1e-3, 2001),
                        1 - 10.0 ** -np.linspace(1, 15, 80), [0.5, 0.02425, 1 - 0.02425]])
    ours = np.array([ndtri(x) for x in p])
    ref = scipy_ndtri(p)
    assert np.all(np.abs(ours - ref) <= 1e-12 * np.maximum(1.0, np.abs(ref)))
    assert ndtri(0.0) == -np.inf and ndtri(1.0) == np.inf and np.isnan(ndtri(np.nan))


def _cells(n_per_class: int, pileup: bool):
    """Noise, total noise and mean pileup subtracted of a set of cells: every noise class, and
    with ``pileup`` three pileup levels (the last one, sub = 4 σ_e, makes most empty cells
    active: a negative energy below −2σ)."""
    noise = np.repeat(NOISE, n_per_class)
    if not pileup:
        return noise, noise.copy(), None
    k = np.arange(len(noise)) % 3
    var_pu = (np.array([0.3, 1.0, 0.45])[k] * noise) ** 2
    sub = np.array([0.2, 1.0, 4.0])[k] * noise
    return noise, np.sqrt(noise**2 + var_pu), sub


def _dense(noise, sigma, sub, n_ev, rng):
    """The dense readout of empty cells (float32 draws, as lhcml.sim.jet_calo.readout): x/σ."""
    z = rng.standard_normal((n_ev, len(noise)), dtype=np.float32)
    x = (noise.astype(np.float32) * z).astype(np.float64)
    if sub is not None:
        x -= sub
    return x / sigma


def _sparse(model, n_ev, rng, n_quiet):
    """The sparse readout of empty cells: active cells per event, their x/σ, and the x/σ of
    ``n_quiet`` inactive cells per event given a value as perimeter cells."""
    n = len(model.sigma)
    e = np.zeros(n)
    mark = np.zeros(n, np.int8)
    touched = np.empty(n, np.int64)
    counts, active, quiet = [], [], []
    for _ in range(n_ev):
        e[:] = 0.0
        nt = read_event(e, mark, touched, model.noise32, model.sub, model.has_sub, model.sigma, model.grow_sigma,
                        model.lo_cdf, model.p_active, model.seed_cdf, model.p_max, rng)
        act = touched[:nt].copy()
        assert np.all(np.diff(act) > 0)
        assert np.all((mark[act] == VALUE) | (mark[act] == PENDING))
        finish_values(e, act, mark, model.noise32, model.sub, model.has_sub, model.sigma, model.grow_sigma,
                      model.lo_cdf, model.p_active, rng)
        assert np.all(mark[act] == VALUE)
        free = np.flatnonzero(mark == NO_VALUE)[:n_quiet]
        finish_values(e, free, mark, model.noise32, model.sub, model.has_sub, model.sigma, model.grow_sigma,
                      model.lo_cdf, model.p_active, rng)
        counts.append(nt)
        active.append(e[act] / model.sigma[act])
        quiet.append(e[free] / model.sigma[free])
        mark[:] = NO_VALUE
    return np.array(counts), np.concatenate(active), np.concatenate(quiet)


def _p_values(noise, sigma, sub, grow, seed):
    """p-values of the three comparisons (active cells per event: Welch t-test; active values and
    perimeter values: two-sample KS) of the sparse readout built for ``grow`` against the dense
    one at the clustering's 2σ."""
    n_ev = 300
    model = sparse_noise_model(noise, sigma, sub, grow, 4.0)
    counts, active, quiet = _sparse(model, n_ev, np.random.default_rng(seed), n_quiet=1500)
    s = _dense(noise, sigma, sub, n_ev, np.random.default_rng(seed + 1))
    on = np.abs(s) > 2.0
    d_counts = on.sum(axis=1)
    d_active = s[on]
    d_quiet = s[:, : len(noise)][~on][: len(quiet)]
    return (stats.ttest_ind(counts, d_counts, equal_var=False).pvalue, stats.ks_2samp(active, d_active).pvalue,
            stats.ks_2samp(quiet, d_quiet).pvalue), counts.mean()


@pytest.mark.parametrize("pileup", [False, True])
def test_sparse_readout_has_the_dense_distribution_and_a_wrong_threshold_fails(pileup):
    noise, sigma, sub = _cells(800, pileup)
    (p_n, p_act, p_quiet), mean_count = _p_values(noise, sigma, sub, 2.0, 3)
    assert min(p_n, p_act, p_quiet) > 1e-3, (p_n, p_act, p_quiet)
    if not pileup:  # 4.55 % of the cells are active at mu = 0
        assert mean_count == pytest.approx(0.0455 * len(noise), rel=0.02)
    # built for 1.9 sigma instead of the clustering's 2: every check fails
    (w_n, w_act, w_quiet), _ = _p_values(noise, sigma, sub, 1.9, 3)
    assert max(w_n, w_act, w_quiet) < 1e-3, (w_n, w_act, w_quiet)


def test_sparse_readout_is_deterministic_and_draws_from_the_generator():
    noise, sigma, sub = _cells(500, True)
    model = sparse_noise_model(noise, sigma, sub, 2.0, 4.0)
    runs = []
    for _ in range(2):
        rng = np.random.default_rng(17)
        counts, active, quiet = _sparse(model, 20, rng, n_quiet=200)
        runs.append((counts, active, quiet, rng.random()))
    assert all(np.array_equal(a, b) for a, b in zip(runs[0], runs[1], strict=True))
    other = _sparse(model, 20, np.random.default_rng(18), n_quiet=200)
    assert not np.array_equal(other[1], runs[0][1])


def test_sparse_noise_model_rejects_bad_thresholds():
    with pytest.raises(ValueError, match="threshold"):
        sparse_noise_model(NOISE, NOISE, None, 0.0, 4.0)
    with pytest.raises(ValueError, match="threshold"):
        sparse_noise_model(NOISE, NOISE, None, 5.0, 4.0)
