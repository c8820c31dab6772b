"""The tabulated erf of the deposit kernel (jet_calo._erf_tab) and the lateral-profile fractions
it gives: within 5e-12 of libm's erf over the whole range the stencils use, odd, saturating; the
fractions per bin within 1e-11 of scipy's; a table with a deliberately wrong derivative fails."""

import math

import numpy as np
import pytest
from scipy.special import erf as scipy_erf

from lhcml.sim import jet_calo as jc

ERF_ATOL = 5e-12


def _erf_error(f, x):
    return max(abs(f(float(v)) - math.erf(float(v))) for v in x)


def test_tabulated_erf_matches_libm_everywhere():
    rng = np.random.default_rng(11)
    x = np.concatenate([np.linspace(-7.0, 7.0, 200_001), rng.uniform(-6.5, 6.5, 100_000),
                        np.arange(-6 * 256, 6 * 256 + 1) / 256.0,  # the table's nodes
                        [0.0, -0.0, 6.0, -6.0, 5.999999, 1e-300, -1e-300, 50.0, -50.0, np.inf, -np.inf]])
    assert _erf_error(jc._erf_tab, x) < ERF_ATOL
    ys = np.array([jc._erf_tab(float(v)) for v in x])
    assert np.array_equal(ys, -np.array([jc._erf_tab(float(-v)) for v in x]))  # odd, bit for bit
    assert jc._erf_tab(np.inf) == 1.0 and jc._erf_tab(-np.inf) == -1.0 and jc._erf_tab(9.0) == 1.0
    assert math.isnan(jc._erf_tab(math.nan))
    assert np.all(np.diff(ys[:200_001]) >= 0)  # monotonic on the dense grid


def test_a_table_with_a_wrong_derivative_fails(monkeypatch):
    x = np.random.default_rng(12).uniform(-4.0, 4.0, 20_000)
    assert _erf_error(jc._erf_tab.py_func, x) < ERF_ATOL  # the interpreted kernel reads the module's table
    monkeypatch.setattr(jc, "_ERF_D", jc._ERF_D * 1.01)  # derivatives 1 % off
    assert _erf_error(jc._erf_tab.py_func, x) > 10 * ERF_ATOL
    monkeypatch.setattr(jc, "_ERF_D", np.zeros_like(jc._ERF_D))  # no derivatives: a cubic through the values
    assert _erf_error(jc._erf_tab.py_func, x) > 10 * ERF_ATOL


@pytest.mark.parametrize(("sigma", "width"), [(0.012, 0.025), (0.045, 0.1), (0.012, 0.025 / 8), (0.045, 0.2)])
def test_profile_fractions_match_scipy(sigma, width):
    """Each bin's share of the Gaussian (before and after the stencil's renormalisation) from
    scipy's erf, for impact points across a cell, the η edge of a block, and periodic φ."""
    rng = np.random.default_rng(13)
    out = np.empty(jc.STENCIL_MAX_CELLS)
    worst = 0.0
    for x in np.concatenate([rng.uniform(-0.3, 0.3, 300), [0.0, width / 2, -1e-9]]):
        for lo, n_bins in ((-0.5, 40), (0.0, 40), (-0.5, -1)):  # (0.0: the impact near the block's lower edge)
            i0 = int(math.floor((x - lo) / width))
            j0, n = jc.stencil_cells(x, sigma, lo, width)
            jc._gauss_bins(x, lo, width, n_bins, j0, n, sigma, out)
            j = j0 + np.arange(n)
            cdf = 0.5 * scipy_erf((lo + np.arange(j0, j0 + n + 1) * width - x) / (sigma * math.sqrt(2.0)))
            ref = np.diff(cdf)
            if n_bins >= 0:
                ref[(j < 0) | (j >= n_bins)] = 0.0
            if ref.sum() <= 0:
                assert out[min(max(i0 - j0, 0), n - 1)] == 1.0
                continue
            ref /= ref.sum()
            worst = max(worst, np.abs(out[:n] - ref).max())
            assert abs(out[:n].sum() - 1.0) < 1e-14
    assert worst < 1e-11
