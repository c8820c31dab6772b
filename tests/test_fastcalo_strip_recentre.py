"""The recentring and core strip passes (``QuantileCorrection.fit(level="strips", strip_variable="recentre"|"core")``,
``lhcml fastcalo quantile-map --strip-pass --strip-variable recentre|core``; :mod:`lhcml.models.fastcalo.strip_pass`;
issue 15, h28a).

* ``shift_cells``: a known answer (one strip shifted by a fraction and by whole strips; the layer's energy kept);
* known answer, ``recentre``: the detailed showers' strip profile is centred on the impact (``phase - 0.5`` strips from
  the window's centre strip), the generator's jitters by ``U(-0.7, 0.7)`` strips around it: without the pass the
  barycentre residual spreads > 4x the detailed one and the hottest strip misses the impact strip in > 15 % of the
  mid-strip showers; the pass brings the residual's spread to the detailed one's and the hottest strip home, the strip
  layer's energy and every other layer kept;
* known answer, ``core``: the generator's core side share is > 0.05 too small; the pass brings its mean to the
  detailed one, the three strips' sum (so the strip energy) kept, the hottest strip unchanged;
* both as further passes: save / load, the torch module (the ONNX graph's version) and the CLI's ONNX agree with
  ``apply()``; eta is required for ``recentre``; a recentring header without the strip width is one ConfigError.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _fastcalo_helpers import strip_sample, strip_showers

from lhcml.errors import ConfigError
from lhcml.models.fastcalo.quantile_map import QuantileCorrection
from lhcml.models.fastcalo.strip_pass import centre_residual, core_share, shift_cells, strip_profile

N_ETA, N_PHI = 15, 2
SIZES = [N_ETA * N_PHI, 4]
DETA = 0.003125
STRIPS = dict(strip_layer=0, strip_n_eta=N_ETA)


def _box_profile(centre, width):
    """``(N, N_ETA)`` a Gaussian of ``width`` strips at ``centre`` (strip units from the window's centre strip) integrated
    over each strip (unit sum inside the window)."""
    from math import erf

    verf = np.vectorize(erf)
    edges = np.arange(N_ETA + 1)[None, :] - N_ETA // 2 - 0.5
    cdf = 0.5 * (1 + verf((edges - centre[:, None]) / (width * np.sqrt(2))))
    p = np.diff(cdf, axis=1)
    return p / p.sum(1, keepdims=True)


def _showers(rng, e, eta, jitter, width=0.6):
    n = len(e)
    phase = np.mod(np.abs(eta) / DETA, 1.0)
    prof = _box_profile(phase - 0.5 + rng.uniform(-jitter, jitter, n), width) * 0.3 * rng.uniform(0.8, 1.2, n)[:, None]
    return strip_showers(rng, e, prof)


def _sample(seed, n=3000):
    return strip_sample(seed, n)


def _prof(x):
    return strip_profile(x, 0, N_ETA, N_PHI)


def test_shift_cells_known_answer():
    c = np.zeros((3, 6, 2))
    c[:, 2, :] = [1.0, 3.0]
    got = shift_cells(c, np.array([0.3, -1.0, 0.0]))
    np.testing.assert_allclose(got[0, 2], [0.7, 2.1])
    np.testing.assert_allclose(got[0, 3], [0.3, 0.9])
    np.testing.assert_allclose(got[1, 1], [1.0, 3.0])
    np.testing.assert_array_equal(got[2], c[2])
    np.testing.assert_allclose(got.sum(axis=(1, 2)), 4.0)
    edge = np.zeros((1, 6, 1))
    edge[0, 5, 0] = 2.0
    edge[0, 4, 0] = 2.0
    np.testing.assert_allclose(shift_cells(edge, np.array([0.5])).sum(), 4.0)  # what leaves the window comes back


def test_the_recentring_pass_brings_the_shower_centre_to_the_impact():
    rng, e, eta = _sample(91)
    gen, ref = _showers(rng, e, eta, 0.7), _showers(rng, e, eta, 0.05)
    _, r_gen = centre_residual(_prof(gen), eta, DETA)
    _, r_ref = centre_residual(_prof(ref), eta, DETA)
    assert r_gen.std() > 4 * r_ref.std()  # the jitter, which no per-cell map removes
    corr = QuantileCorrection.fit(gen, e, ref, e, SIZES, level="strips", strip_variable="recentre", gen_eta=eta,
                                  ref_eta=eta, eta_bins=2, cell_deta=[DETA, 0.025], **STRIPS)  # fmt: skip
    assert corr.meta["strip_variable"] == "recentre" and corr.meta["strip_cell_deta"] == DETA
    rng2, e2, eta2 = _sample(92)
    x = _showers(rng2, e2, eta2, 0.7)
    got = corr.apply(x, e2, eta2)
    _, r_new = centre_residual(_prof(got), eta2, DETA)
    assert r_new.std() < 1.5 * r_ref.std()

    def hit(s, et):  # mid-strip impacts whose hottest strip is the impact strip
        mid = np.abs(np.mod(et / DETA, 1.0) - 0.5) < 0.25
        return np.mean(np.argmax(_prof(s), 1)[mid] == N_ETA // 2)

    assert hit(x, eta2) < 0.85 and hit(got, eta2) > 0.99 and hit(ref, eta) > 0.99
    np.testing.assert_allclose(got[:, :30].sum(1), x[:, :30].sum(1), rtol=1e-5)
    np.testing.assert_array_equal(got[:, 30:], x[:, 30:])
    with pytest.raises(ConfigError, match="give each shower's eta"):
        corr.apply(x, e2)


def test_the_core_pass_brings_the_core_width_to_the_detailed_one():
    rng, e, eta = _sample(93)
    gen, ref = _showers(rng, e, eta, 0.05, width=0.45), _showers(rng, e, eta, 0.05, width=0.6)
    x_gen, x_ref = core_share(_prof(gen))[0], core_share(_prof(ref))[0]
    assert x_ref.mean() - x_gen.mean() > 0.05
    corr = QuantileCorrection.fit(gen, e, ref, e, SIZES, level="strips", strip_variable="core", **STRIPS)
    rng2, e2, eta2 = _sample(94)
    x = _showers(rng2, e2, eta2, 0.05, width=0.45)
    got = corr.apply(x, e2, None)
    assert abs(core_share(_prof(got))[0].mean() - x_ref.mean()) < 0.01
    np.testing.assert_array_equal(np.argmax(_prof(got), 1), np.argmax(_prof(x), 1))
    np.testing.assert_allclose(got[:, :30].sum(1), x[:, :30].sum(1), rtol=1e-5)
    np.testing.assert_array_equal(got[:, 30:], x[:, 30:])


@pytest.mark.parametrize(("variable", "bins", "phase_from"),
                         [("recentre", 1, "impact"), ("core", 1, "impact"), ("core", 4, "impact"), ("core", 4, "cluster")])
def test_a_further_pass_round_trips_and_the_torch_module_agrees(tmp_path, variable, bins, phase_from):
    rng, e, eta = _sample(95, 2000)
    gen, ref = _showers(rng, e, eta, 0.45, 0.45), _showers(rng, e, eta, 0.05)
    first = QuantileCorrection.fit(gen, e, ref, e, SIZES, eta_bins=2, gen_eta=eta, ref_eta=eta)
    corr = QuantileCorrection.fit(gen, e, ref, e, SIZES, level="strips", after=first, eta_bins=2, gen_eta=eta,
                                  ref_eta=eta, strip_variable=variable, cell_deta=[DETA, 0.025], strip_phase_bins=bins,
                                  strip_phase_from=phase_from, **STRIPS)  # fmt: skip
    assert corr.meta.get("strip_phase_bins", 1) == bins and corr.meta.get("strip_phase_from", "impact") == phase_from
    back = QuantileCorrection.load(corr.save(tmp_path / "strips.npz"))
    ee = np.exp(rng.uniform(np.log(5.0), np.log(100.0), len(e)))
    x = _showers(rng, ee, eta, 0.45, 0.45)
    want = corr.apply(x, ee, eta)
    np.testing.assert_array_equal(back.apply(x, ee, eta), want)
    assert np.abs(want - first.apply(x, ee, eta)).max() / ee.max() > 0.005  # the last pass moves strips
    with torch.no_grad():
        got = back.torch_module()(torch.as_tensor(x), torch.as_tensor(ee, dtype=torch.float32),
                                  torch.as_tensor(eta, dtype=torch.float32)).numpy()  # fmt: skip
    assert np.abs(got - want).max() / ee.min() < 5e-4


def test_a_recentring_or_phase_binned_pass_needs_the_strip_width():
    rng, e, eta = _sample(96, 300)
    x = _showers(rng, e, eta, 0.3)
    with pytest.raises(ConfigError, match="strip_cell_deta"):
        QuantileCorrection.fit(x, e, x, e, SIZES, level="strips", strip_variable="recentre", gen_eta=eta, ref_eta=eta,
                               **STRIPS)  # fmt: skip
    with pytest.raises(ConfigError, match="strip_cell_deta"):
        QuantileCorrection.fit(x, e, x, e, SIZES, level="strips", strip_variable="core", strip_phase_bins=4, gen_eta=eta,
                               ref_eta=eta, **STRIPS)  # fmt: skip
    with pytest.raises(ConfigError, match="phase bins belong to a core"):
        QuantileCorrection.fit(x, e, x, e, SIZES, level="strips", strip_phase_bins=4, cell_deta=[DETA, 0.025], **STRIPS)


@pytest.mark.parametrize(("variable", "bins"), [("recentre", 1), ("core", 4), ("cluster", 4)])
def test_the_cli_fits_the_pass_into_onnx(tmp_path, capsys, variable, bins):
    """onnxruntime gives apply() for the CLI's pass on a tiny real-binning checkpoint."""
    from _fastcalo_helpers import corrected_onnx_matches_apply

    args = ["--strip-pass", "--strip-variable", "core" if variable == "cluster" else variable, "--strip-phase-bins",
            str(bins)] + (["--strip-phase-from", "cluster"] if variable == "cluster" else [])  # fmt: skip
    corr, _ = corrected_onnx_matches_apply(tmp_path, capsys, args, data_seed=52, n=400)
    assert corr.level == "strips" and corr.meta["strip_variable"] == args[2]
    assert corr.meta.get("strip_phase_bins", 1) == bins


def test_a_whole_strip_recentring_only_rolls_the_profile():
    """``shift="whole"`` (:func:`~lhcml.models.fastcalo.strip_pass.fit_strip_pass`): each shower's strips move by a
    whole number of strips (the profile's shape kept), the mid-strip hottest strip comes home; torch agrees."""
    from lhcml.models.fastcalo.strip_pass import fit_strip_pass

    rng, e, eta = _sample(97, 2000)
    gen, ref = _showers(rng, e, eta, 0.9), _showers(rng, e, eta, 0.05)
    corr = fit_strip_pass(gen, e, ref, e, SIZES, variable="recentre", cell_deta=DETA, shift="whole", gen_eta=eta,
                          ref_eta=eta, **STRIPS)  # fmt: skip
    assert corr.meta["strip_shift"] == "whole"
    got = corr.apply(gen, e, eta)
    p0, p1 = _prof(gen), _prof(got)
    rolled = [min(np.abs(np.roll(a, s)[2:-2] - b[2:-2]).max() for s in (-1, 0, 1)) for a, b in zip(p0, p1, strict=True)]
    assert max(rolled) / e.min() < 1e-5
    mid = np.abs(np.mod(eta / DETA, 1.0) - 0.5) < 0.25
    assert np.mean(np.argmax(p1, 1)[mid] == N_ETA // 2) > np.mean(np.argmax(p0, 1)[mid] == N_ETA // 2) + 0.1
    with torch.no_grad():
        t = corr.torch_module()(torch.as_tensor(gen), torch.as_tensor(e, dtype=torch.float32),
                                torch.as_tensor(eta, dtype=torch.float32)).numpy()  # fmt: skip
    assert np.abs(t - got).max() / e.min() < 5e-4


def test_the_cluster_binned_core_pass_ties_the_core_width_to_the_cluster_position():
    """Known answer: the detailed core width follows where the shower sits in its strip (fixed width, so the core share
    is a function of the cluster barycentre's place ``u`` in the hottest strip: corr(u^2, x) ~ 1, what w_s3's impact
    correction relies on), the generator's width is random (corr ~ 0.5): a pooled core map matches the spread but not
    the tie (corr stays < 0.5); the map in 4 bins of |u| (``strip_phase_from="cluster"``) restores it (> 0.7)."""
    from lhcml.models.fastcalo.strip_pass import cluster_u

    rng, e, eta = _sample(98)
    gen = _showers(rng, e, eta, 0.05, width=rng.uniform(0.35, 0.9, len(e))[:, None])
    ref = _showers(rng, e, eta, 0.05, width=0.6)

    def tie(s):
        p = _prof(s)
        return np.corrcoef(cluster_u(p) ** 2, core_share(p)[0])[0, 1]

    assert tie(ref) > 0.95 and tie(gen) < 0.6
    pooled = QuantileCorrection.fit(gen, e, ref, e, SIZES, level="strips", strip_variable="core", **STRIPS)
    binned = QuantileCorrection.fit(gen, e, ref, e, SIZES, level="strips", strip_variable="core", strip_phase_bins=4,
                                    strip_phase_from="cluster", cell_deta=[DETA, 0.025], **STRIPS)  # fmt: skip
    assert tie(pooled.apply(gen, e, eta)) < 0.5 and tie(binned.apply(gen, e, eta)) > 0.7
