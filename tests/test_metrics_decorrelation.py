"""Jensen-Shannon divergence, 1/JSD50, R50 and distance correlation."""

from __future__ import annotations

import numpy as np
import pytest

from lhcml.metrics import (
    distance_correlation,
    inverse_jsd_at_efficiency,
    jensen_shannon_divergence,
    mass_histograms_pass_fail,
    r50,
)


def test_jsd_hand_values():
    p = np.array([1.0, 2.0, 3.0, 0.0])
    assert jensen_shannon_divergence(p, 5 * p) == 0.0  # normalisation is internal
    assert jensen_shannon_divergence([1, 1, 0, 0], [0, 0, 3, 1]) == pytest.approx(1.0)
    # P = (1, 0), Q = (1/2, 1/2): M = (3/4, 1/4);
    # JSD = 1/2 [ln(4/3)] + 1/2 [1/2 ln(2/3) + 1/2 ln 2], in bits
    hand = (0.5 * np.log(4 / 3) + 0.25 * np.log(2 / 3) + 0.25 * np.log(2)) / np.log(2)
    assert jensen_shannon_divergence([1, 0], [1, 1]) == pytest.approx(hand, rel=1e-12)
    assert jensen_shannon_divergence([1, 0], [1, 1], base=np.e) == pytest.approx(hand * np.log(2))
    a, b = np.array([3.0, 1, 2]), np.array([1.0, 4, 1])
    assert jensen_shannon_divergence(a, b) == pytest.approx(jensen_shannon_divergence(b, a))
    with pytest.raises(ValueError, match="binning"):
        jensen_shannon_divergence([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="empty"):
        jensen_shannon_divergence([0, 0], [1, 2])


def test_inverse_jsd_detects_sculpting():
    rng = np.random.default_rng(4)
    n = 50_000
    mass = rng.uniform(20, 250, n)
    ds = rng.normal(2, 1, n)
    d_indep = rng.normal(0, 1, n)  # tagger independent of mass
    d_sculpt = d_indep + 0.02 * (mass - 135)  # tagger learns the mass
    inv_indep = inverse_jsd_at_efficiency(ds, d_indep, mass)
    inv_sculpt = inverse_jsd_at_efficiency(ds, d_sculpt, mass)
    assert inv_indep > 20 * inv_sculpt
    # passing/failing histograms partition the background
    hp, hf, edges = mass_histograms_pass_fail(ds, d_indep, mass, bins=np.linspace(0, 300, 31))
    assert hp.sum() + hf.sum() == n and edges.size == 31
    # background with identical pass/fail distributions -> JSD = 0 -> 1/JSD = inf
    db = np.r_[np.zeros(100), np.ones(100)]
    m = np.r_[np.arange(100.0), np.arange(100.0)]
    assert inverse_jsd_at_efficiency(np.array([0.0, 1.0]), db, m, sig_eff=0.5,
                                     bins=np.linspace(0, 100, 11)) == np.inf


def test_r50_known_case():
    s = np.linspace(0.5, 1, 100_001)
    b = np.linspace(0, 1, 100_001)
    assert r50(s, b) == pytest.approx(4.0, rel=1e-3)
    # weights: doubling the weight of background above 0.75 doubles the passing fraction-ish
    w = np.where(b >= 0.75, 2.0, 1.0)
    assert r50(s, b, w_bkg=w) == pytest.approx((0.75 + 2 * 0.25) / (2 * 0.25), rel=1e-3)


def _dcor_brute(x, y):
    """Székely's V-statistic distance correlation with explicit n x n double centring."""
    a = np.abs(x[:, None] - x[None, :])
    b = np.abs(y[:, None] - y[None, :])
    A = a - a.mean(0) - a.mean(1)[:, None] + a.mean()
    B = b - b.mean(0) - b.mean(1)[:, None] + b.mean()
    return np.sqrt((A * B).mean() / np.sqrt((A * A).mean() * (B * B).mean()))


def test_distance_correlation_values():
    rng = np.random.default_rng(5)
    x = rng.normal(size=400)
    assert distance_correlation(x, 3 * x - 2) == pytest.approx(1.0, abs=1e-10)
    assert distance_correlation(x, -x) == pytest.approx(1.0, abs=1e-10)
    y = x**2 + 0.1 * rng.normal(size=400)  # uncorrelated (Pearson ~ 0) but dependent
    assert abs(np.corrcoef(x, y)[0, 1]) < 0.2
    assert distance_correlation(x, y) > 0.3
    assert distance_correlation(x, y) == pytest.approx(_dcor_brute(x, y), rel=1e-10)
    assert distance_correlation(x, y, squared=True) == pytest.approx(_dcor_brute(x, y) ** 2)
    # chunking does not change the result
    assert distance_correlation(x, y, chunk=37) == pytest.approx(distance_correlation(x, y))
    # independent samples: small, and shrinking with N (V-statistic bias ~ 1/sqrt(N))
    small = distance_correlation(rng.normal(size=300), rng.normal(size=300))
    large = distance_correlation(rng.normal(size=3000), rng.normal(size=3000))
    assert large < 0.1 and large < small
    assert distance_correlation(x, np.ones_like(x)) == 0.0


def test_distance_correlation_weights_equal_repetition():
    rng = np.random.default_rng(6)
    x = rng.normal(size=120)
    y = np.sin(x) + 0.3 * rng.normal(size=120)
    k = rng.integers(1, 4, size=120)
    weighted = distance_correlation(x, y, weights=k.astype(float))
    repeated = distance_correlation(np.repeat(x, k), np.repeat(y, k))
    assert weighted == pytest.approx(repeated, rel=1e-10)
    assert distance_correlation(x, y, weights=np.full(120, 7.0)) == pytest.approx(
        distance_correlation(x, y), rel=1e-12)
    with pytest.raises(ValueError, match="weights"):
        distance_correlation(x, y, weights=-np.ones(120))
