"""Histograms are filled with hist/boost-histogram (issue 11, "well-kept libraries"): the weighted
contents and variances equal numpy's ``np.histogram`` of the weights and squared weights, on
random data with entries on the edges, outside the range and NaN.
"""

from __future__ import annotations

import numpy as np
import pytest

from lhcml.plots.histograms import HistogramPlot, fill_histogram, folded_contents


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(17)
    edges = np.array([-2.0, -1.0, -0.25, 0.0, 0.5, 1.5, 3.0])  # unequal bins
    v = rng.normal(0.3, 1.5, 20_000)
    v[:50] = edges[rng.integers(0, edges.size, 50)]  # exactly on the edges (incl. both ends)
    v[50:60] = np.nan
    v[60:65] = [np.inf, -np.inf, 1e9, -1e9, np.inf]
    w = rng.exponential(1.3, v.size) * rng.choice([-1.0, 1.0], v.size, p=[0.1, 0.9])  # some negative
    return v, w, edges


def test_in_range_contents_and_variances_equal_numpy(data):
    v, w, edges = data
    h = fill_histogram(v, edges, w)
    ref, _ = np.histogram(v, edges, weights=w)
    ref2, _ = np.histogram(v, edges, weights=w**2)
    # numpy closes the last bin on the right, boost-histogram puts x == last edge in the overflow
    on_last = (v == edges[-1])
    ref[-1] -= w[on_last].sum()
    ref2[-1] -= (w[on_last] ** 2).sum()
    np.testing.assert_allclose(h.values(), ref, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(h.variances(), ref2, rtol=1e-12, atol=1e-9)
    # unweighted: integer counts, variance = count
    hu = fill_histogram(v, edges)
    cnt, _ = np.histogram(v, edges)
    cnt[-1] -= on_last.sum()
    np.testing.assert_array_equal(hu.values(), cnt)
    np.testing.assert_array_equal(hu.variances(), cnt)


def test_flow_bins_hold_everything_outside_and_nan_is_dropped(data):
    v, w, edges = data
    h = fill_histogram(v, edges, w)
    flow = h.values(flow=True)
    finite = ~np.isnan(v)
    assert flow.sum() == pytest.approx(w[finite].sum(), rel=1e-12)
    assert flow[0] == pytest.approx(w[finite & (v < edges[0])].sum(), rel=1e-12)
    assert flow[-1] == pytest.approx(w[finite & (v >= edges[-1])].sum(), rel=1e-12)


def test_folded_contents_equal_numpy_on_clipped_values(data):
    """What the plot draws: under/overflow in the edge bins, as np.histogram of clipped values."""
    v, w, edges = data
    cont, var = folded_contents(fill_histogram(v, edges, w))
    clipped = np.clip(v, edges[0], edges[-1])
    ref, _ = np.histogram(clipped, edges, weights=w)
    ref2, _ = np.histogram(clipped, edges, weights=w**2)
    np.testing.assert_allclose(cont, ref, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(var, ref2, rtol=1e-12, atol=1e-9)


def test_histogram_plot_draws_the_hist_contents(data):
    v, w, edges = data
    w = np.abs(w)
    plot = HistogramPlot(bins=edges, norm=True).add(v, "a", weights=w)
    plot.draw()
    cont, var = folded_contents(fill_histogram(v, edges, w))
    scale = 1.0 / (cont.sum() * np.diff(edges))
    np.testing.assert_allclose(plot.contents[0], cont * scale, rtol=1e-12)
    assert np.sum(plot.contents[0] * np.diff(edges)) == pytest.approx(1.0)
    # the error band spans contents ± sqrt(sum w^2), scaled like the contents
    err = np.sqrt(var) * scale
    bands = [p for p in plot.fig.axes[0].patches if p.get_alpha() == pytest.approx(0.15)]
    assert len(bands) == 1
    top, band_edges, bottom = bands[0].get_data()
    np.testing.assert_allclose(band_edges, edges)
    np.testing.assert_allclose(top, plot.contents[0] + err, rtol=1e-12)
    np.testing.assert_allclose(bottom, np.maximum(plot.contents[0] - err, plot.contents[0] * 1e-3), rtol=1e-12)
