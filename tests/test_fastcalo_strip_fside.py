"""The outer-share strip pass (``QuantileCorrection.fit(level="strips", strip_variable="fside")``, ``lhcml fastcalo
quantile-map ... --strip-pass --strip-variable fside``; :mod:`lhcml.models.fastcalo.strip_pass`; issue 15, h31b).

* known answer: generated and detailed showers share the same three-strip core; only the outer share
  ``x = (E7 - E3) / E7`` of the seven strips around the hottest differs (generated ``U(0.05, 0.10)``, detailed
  ``U(0.10, 0.15)``, so fracs1 = x / (1 - x) is too small in the generated ones, as the seven-pass generator's at
  |η| < 0.5). After the pass the outer share has the detailed distribution, while each shower's strip energy, E7, the
  core's own side share (w_s3), the hottest strip and every other layer are kept;
* the same distributions on both sides: the map is the identity up to the quantiles' sampling error;
* ``fside_factors`` caps the share so the hottest strip stays the hottest; save / load and the torch module (the ONNX
  graph's version) agree with ``apply()``; the CLI's ONNX agrees (onnxruntime).
"""

from __future__ import annotations

import numpy as np
import pytest
from _fastcalo_helpers import assert_bounded_pass_round_trips, strip_sample, strip_showers

from lhcml.models.fastcalo.quantile_map import QuantileCorrection
from lhcml.models.fastcalo.strip_pass import (
    CORE_CAP,
    core_share,
    fside_factors,
    fside_share,
    strip_profile,
)

N_ETA, N_PHI = 15, 2
SIZES = [N_ETA * N_PHI, 4]
FSIDE = dict(level="strips", strip_variable="fside", strip_layer=0, strip_n_eta=N_ETA)


def _showers(rng, e, lo, hi, shift=0):
    """Seven-strip profiles around the strip ``N_ETA // 2 + shift``: a core (side share ``U(0.35, 0.45)``, asymmetric)
    holding ``1 - x`` of E7 and four outer strips (2 : 1 from the inside out, either side) holding ``x ~ U(lo, hi)``,
    plus a flat 1 % ``tail`` beyond; all times the incident energy (:func:`strip_showers`)."""
    n = len(e)
    x = rng.uniform(lo, hi, n)
    xs = rng.uniform(0.35, 0.45, n)
    asym = rng.uniform(-0.3, 0.3, n)
    c = N_ETA // 2 + shift
    prof = np.full((n, N_ETA), 0.0015)
    prof[:, c] = (1 - x) * (1 - xs)
    prof[:, c - 1], prof[:, c + 1] = (1 - x) * xs * (0.5 - asym / 2), (1 - x) * xs * (0.5 + asym / 2)
    for d, w in ((2, 2 / 6), (3, 1 / 6)):
        prof[:, c - d] = x * w * (1 - asym / 3)
        if c + d < N_ETA:  # (shift 5: the hottest strip too near the window's edge for the pass)
            prof[:, c + d] = x * w * (1 + asym / 3)
    return strip_showers(rng, e, 0.3 * prof * rng.uniform(0.8, 1.2, n)[:, None])


def _prof(x):
    return strip_profile(x, 0, N_ETA, N_PHI)


def test_the_pass_gives_the_outer_share_the_detailed_distribution_and_keeps_the_core():
    rng, e, eta = strip_sample(41, 3000)
    gen, ref = _showers(rng, e, 0.05, 0.10), _showers(rng, e, 0.10, 0.15)
    corr = QuantileCorrection.fit(gen, e, ref, e, SIZES, eta_bins=2, gen_eta=eta, ref_eta=eta, **FSIDE)
    assert corr.level == "strips" and corr.meta["strip_variable"] == "fside"
    rng2, e2, eta2 = strip_sample(42, 3000)
    x = _showers(rng2, e2, 0.05, 0.10)
    got = corr.apply(x, e2, eta2)
    p0, p1 = _prof(x), _prof(got)
    s0, ok0 = fside_share(p0)
    s1, ok1 = fside_share(p1)
    assert ok0.all() and ok1.all()
    want = np.quantile(fside_share(_prof(_showers(rng2, e2, 0.10, 0.15)))[0], [0.1, 0.5, 0.9])
    np.testing.assert_allclose(np.quantile(s1, [0.1, 0.5, 0.9]), want, atol=0.004)  # the detailed distribution
    assert abs(np.quantile(s0, 0.5) - want[1]) > 0.04  # (it was not there before)
    # the generated ranks are kept: the map is monotone in each shower's own share
    assert np.corrcoef(np.argsort(np.argsort(s0)), np.argsort(np.argsort(s1)))[0, 1] > 0.98
    np.testing.assert_allclose(got[:, :30].sum(1), x[:, :30].sum(1), rtol=1e-5)  # the strip energy kept
    np.testing.assert_array_equal(got[:, 30:], x[:, 30:])  # other layers untouched
    c = N_ETA // 2
    np.testing.assert_allclose(p1[:, c - 3 : c + 4].sum(1), p0[:, c - 3 : c + 4].sum(1), rtol=1e-5)  # E7 kept
    np.testing.assert_allclose(core_share(p1)[0], core_share(p0)[0], atol=1e-5)  # the core's own side share kept
    np.testing.assert_array_equal(np.argmax(p1, 1), np.argmax(p0, 1))  # the hottest strip stays the hottest
    np.testing.assert_allclose(p1[:, : c - 3], p0[:, : c - 3], rtol=1e-5)  # strips beyond E7 untouched
    np.testing.assert_allclose(p1[:, c + 4 :], p0[:, c + 4 :], rtol=1e-5)


def test_equal_distributions_map_to_themselves():
    rng, e, eta = strip_sample(43, 3000)
    gen, ref = _showers(rng, e, 0.05, 0.15), _showers(rng, e, 0.05, 0.15)
    corr = QuantileCorrection.fit(gen, e, ref, e, SIZES, **FSIDE)
    x = _showers(rng, e, 0.05, 0.15)
    d = fside_share(_prof(corr.apply(x, e)))[0] - fside_share(_prof(x))[0]
    assert np.abs(d).mean() < 0.002 and abs(d.mean()) < 0.001


def test_factors_keep_e7_and_cap_the_share_below_the_hottest_strip():
    # hottest 1.0, neighbours 0.5 / 0.3, outer 0.2 / 0.1 / 0.25 / 0.05; E3 = 1.8, outer 0.6, x = 0.25
    p = np.zeros((3, 11))
    p[:, 2:9] = [0.05, 0.2, 0.5, 1.0, 0.3, 0.25, 0.1]
    x0, ok = fside_share(p)
    assert ok.all() and np.allclose(x0, 0.6 / 2.4)
    f = fside_factors(p, np.array([0.25, 0.3, 0.9]))
    q = p * f
    np.testing.assert_allclose(q[:, 2:9].sum(1), 2.4)  # E7 kept
    np.testing.assert_allclose(f[0], 1.0)  # the share it has: nothing moves
    np.testing.assert_allclose(fside_share(q[1:2])[0], 0.3)  # a reachable share is reached
    np.testing.assert_allclose(q[1, 4:7].sum(), 0.7 * 2.4)
    # 0.9 would make the outer 0.25 strip hotter than the hottest: capped at CORE_CAP of the hottest's energy
    assert np.argmax(q[2]) == 5 and q[2, 7] < q[2, 5] and np.isclose(q[2, 7], CORE_CAP * q[2, 5])
    np.testing.assert_array_equal(f[:, [0, 1, 9, 10]], 1.0)
    # the hottest strip within three strips of the window's edge: left alone
    edge = np.zeros((1, 11))
    edge[0, :5] = [0.3, 1.0, 0.4, 0.2, 0.1]
    assert not fside_share(edge)[1][0]
    np.testing.assert_array_equal(fside_factors(edge, np.array([0.5])), 1.0)


def test_the_fside_pass_round_trips_and_the_torch_module_agrees(tmp_path):
    import torch
    from _fastcalo_helpers import assert_reloaded_chain_agrees

    rng, e, eta = strip_sample(44, 2000)
    gen, ref = _showers(rng, e, 0.05, 0.10), _showers(rng, e, 0.10, 0.15)
    first = QuantileCorrection.fit(gen, e, ref, e, SIZES, eta_bins=2, gen_eta=eta, ref_eta=eta)
    corr = QuantileCorrection.fit(gen, e, ref, e, SIZES, after=first, eta_bins=2, gen_eta=eta, ref_eta=eta, **FSIDE)
    assert corr.meta["passes"] == 2
    ee = np.exp(rng.uniform(np.log(5.0), np.log(100.0), len(e)))
    x = np.concatenate([_showers(rng, ee[:3000], 0.05, 0.10), _showers(rng, ee[3000:], 0.05, 0.10, shift=5)])
    assert fside_share(_prof(x))[1].sum() == 3000  # those at the edge are left alone
    want = assert_reloaded_chain_agrees(corr, corr.save(tmp_path / "fside.npz"), x, ee, eta)
    assert np.abs(want - first.apply(x, ee, eta)).max() / ee.max() > 0.001  # the last pass moves strips
    with torch.no_grad():  # tighter than the helper's bound: float32 rounding of the same arithmetic
        got = corr.torch_module()(torch.as_tensor(x), torch.as_tensor(ee, dtype=torch.float32),
                                  torch.as_tensor(eta, dtype=torch.float32)).numpy()  # fmt: skip
    assert np.abs(got - want).max() / ee.max() < 1e-5


@pytest.mark.parametrize("bound", [[], ["--strip-eta-max", "0.9"]])
def test_the_cli_fits_the_fside_pass_into_onnx(tmp_path, capsys, bound):
    """onnxruntime gives apply() for the CLI's pass on a tiny real-binning checkpoint."""
    from _fastcalo_helpers import corrected_onnx_matches_apply

    corr, _ = corrected_onnx_matches_apply(tmp_path, capsys, ["--strip-pass", "--strip-variable", "fside", *bound],
                                           data_seed=53, n=400)  # fmt: skip
    assert corr.meta["strip_variable"] == "fside" and corr.meta.get("strip_eta_max") == (0.9 if bound else None)


def test_eta_max_leaves_showers_beyond_it_alone_and_belongs_to_fside_only(tmp_path):

    from lhcml.errors import ConfigError

    rng, e, eta = strip_sample(45, 2000)
    gen, ref = _showers(rng, e, 0.05, 0.10), _showers(rng, e, 0.10, 0.15)
    kw = dict(eta_bins=2, gen_eta=eta, ref_eta=eta, **FSIDE)
    every = QuantileCorrection.fit(gen, e, ref, e, SIZES, **kw)
    below = QuantileCorrection.fit(gen, e, ref, e, SIZES, strip_eta_max=0.9, **kw)
    assert below.meta["strip_eta_max"] == 0.9 and "strip_eta_max" not in every.meta
    for k in ("p_gen", "p_ref", "q_gen", "q_ref"):  # the same map, fitted on every shower
        np.testing.assert_array_equal(getattr(below, k), getattr(every, k))
    x = _showers(rng, e, 0.05, 0.10)
    a, b = every.apply(x, e, eta), below.apply(x, e, eta)
    inside = np.abs(eta) < 0.9
    np.testing.assert_array_equal(b[inside], a[inside])
    np.testing.assert_array_equal(b[~inside], x[~inside])
    assert np.abs(a[~inside] - x[~inside]).max() > 1e-3  # (the pass moves them without the bound)
    assert_bounded_pass_round_trips(below, x, e, eta, b, inside, tmp_path / "below.npz")
    with pytest.raises(ConfigError, match="eta_max .* belongs to an fside strip pass"):
        QuantileCorrection.fit(gen, e, ref, e, SIZES, strip_eta_max=0.9, **dict(kw, strip_variable="core"))
    with pytest.raises(ConfigError, match="eta_max .* belongs to an fside strip pass"):
        QuantileCorrection.fit(gen, e, ref, e, SIZES, strip_eta_max=-1.0, **kw)
    with pytest.raises(ConfigError, match="strip_eta_max belongs to an fside strip pass"):
        QuantileCorrection("energy", SIZES, below.log_e_nodes, below.eta_nodes, below.levels, below.p_gen, below.p_ref,
                           below.q_gen, below.q_ref, dict(below.meta, strip_variable="height"), level="strips")  # fmt: skip
