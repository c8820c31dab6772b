"""The quantile correction conditioned on the shower's lateral width rank (``QuantileCorrection.fit(condition=
"shower_width", cell_deta=..., cell_neta=...)``, ``lhcml fastcalo quantile-map --condition shower_width``; issue 15,
h26b).

* the width: a shower with its layer's energy split equally between two η cells one cell apart has the RMS half a
  cell; the energy-weighted mean over the layers;
* known answer: a generator whose two layers are wide *together* (one width factor for the shower) while the detailed
  layers' widths are independent, each with the same marginals — the per-cell (plain) map leaves the correlation of
  the two layers' side shares at 1, the shower_width map cuts it and the spread of the shower width; layer energies
  kept;
* the torch module (the ONNX graph's version) computes the same map, also as a further pass after a two-pass chain
  (``after=``); save / load round trip (the cell geometry stored); bad geometry and incomplete files give one
  ConfigError.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lhcml.errors import ConfigError
from lhcml.models.fastcalo.quantile_map import (
    QuantileCorrection,
    _condition_values,
    _layer_slices,
    eta_offsets,
)

#: layer 0: 3 strips in eta (width 0.003, one in phi); layer 1: 3 x 2 middle cells (width 0.025 in eta), eta-major
SIZES = [3, 6]
DETA = [0.003, 0.025]
NETA = [3, 3]
GEOM = dict(cell_deta=DETA, cell_neta=NETA)


def _showers(rng, e, together: bool):
    """``(N, 9)`` GeV: layer 0 holds ``0.3 E``, layer 1 ``0.6 E`` (each times ``U(0.8, 1.2)``); in each the side cells share ``s = 0.05 + 0.4 u``
    (split at random between left and right), ``u ~ U(0, 1)`` per layer (the detailed shower) or one ``u`` for both
    layers (``together``: the generator; the same marginals, widths fully correlated)."""
    n = len(e)
    u0 = rng.uniform(0.0, 1.0, n)
    u1 = u0 if together else rng.uniform(0.0, 1.0, n)
    out = np.empty((n, 9))
    for a, b, frac, u in ((0, 3, 0.3, u0), (3, 9, 0.6, u1)):
        frac = frac * rng.uniform(0.8, 1.2, n)[:, None]
        s, t = 0.05 + 0.4 * u, rng.uniform(0.3, 0.7, n)
        cells = np.stack([s * t, 1.0 - s, s * (1.0 - t)], axis=1) * frac
        out[:, a:b] = cells if b - a == 3 else np.repeat(cells, 2, axis=1) / 2.0
    return (out * e[:, None]).astype(np.float32)


def _side_corr_and_width_spread(x, e):
    s0 = (x[:, 0] + x[:, 2]) / x[:, :3].sum(1)
    s1 = (x[:, [3, 4, 7, 8]].sum(1)) / x[:, 3:].sum(1)
    w = _condition_values(x, e, _layer_slices(SIZES), "shower_width", None, np.array(DETA), np.array(NETA))
    assert np.all(w == w[:, :1])  # one value per shower, the same for every layer
    return float(np.corrcoef(s0, s1)[0, 1]), float(w[:, 0].std() / w[:, 0].mean())


def test_the_width_is_the_energy_weighted_rms_in_eta():
    """Layer 0: half its energy in each of two strips 0.003 apart (RMS 0.0015); layer 1 all in one cell (RMS 0);
    layer energies 1 and 3 -> width (1 x 0.0015 + 3 x 0) / 4."""
    np.testing.assert_allclose(eta_offsets(SIZES, DETA, NETA), [-0.003, 0, 0.003, -0.025, -0.025, 0, 0, 0.025, 0.025])
    x = np.array([[0.5, 0.5, 0.0, 0.0, 0.0, 1.5, 1.5, 0.0, 0.0]])
    w = _condition_values(x, np.array([5.0]), _layer_slices(SIZES), "shower_width", None, np.array(DETA),
                          np.array(NETA))  # fmt: skip
    np.testing.assert_allclose(w, [[0.0015 / 4, 0.0015 / 4]])


def test_the_width_map_cuts_the_correlated_width_the_plain_map_cannot():
    """Detailed side shares of the two layers uncorrelated, generated ones correlated 1 with the same marginals: the
    plain map leaves 1; the shower_width map (5 bins; also as a second pass) brings it under 0.75 and the shower
    width's relative spread towards the detailed one; every layer keeps its energy."""
    rng = np.random.default_rng(61)
    e = np.repeat([10.0, 100.0], 5000)
    gen, ref = _showers(rng, e, True), _showers(rng, e, False)
    fresh, det = _showers(rng, e, True), _showers(rng, e, False)
    corr_det, spread_det = _side_corr_and_width_spread(det, e)
    corr_gen, spread_gen = _side_corr_and_width_spread(fresh, e)
    assert abs(corr_det) < 0.05 and corr_gen > 0.99 and spread_gen > spread_det + 0.01  # the construction
    plain = QuantileCorrection.fit(gen, e, ref, e, SIZES)
    assert _side_corr_and_width_spread(plain.apply(fresh, e), e)[0] > 0.99  # per-cell maps cannot see it
    for corr in (QuantileCorrection.fit(gen, e, ref, e, SIZES, condition="shower_width", condition_bins=5, **GEOM),
                 QuantileCorrection.fit(gen, e, ref, e, SIZES, condition="shower_width", condition_bins=5,
                                        second_pass=True, **GEOM)):  # fmt: skip
        got = corr.apply(fresh, e)
        c, spread = _side_corr_and_width_spread(got, e)
        assert c < 0.75, c
        assert spread < spread_gen - 0.3 * (spread_gen - spread_det), (spread, spread_gen, spread_det)
        for sl in _layer_slices(SIZES):
            np.testing.assert_allclose(got[:, sl].sum(1), fresh[:, sl].sum(1), rtol=1e-5)


def test_torch_module_file_round_trip_and_a_further_pass(tmp_path):
    """As a third pass after a two-pass chain (``after=``): saved and loaded the same map and cell geometry; the
    graph's version gives apply's showers to float32 rounding at energies between the nodes."""
    rng = np.random.default_rng(62)
    e = np.repeat([10.0, 100.0], 3000)
    gen, ref = _showers(rng, e, True), _showers(rng, e, False)
    two = QuantileCorrection.fit(gen, e, ref, e, SIZES, condition="layer_energy", second_pass=True)
    corr = QuantileCorrection.fit(gen, e, ref, e, SIZES, condition="shower_width", condition_bins=4, after=two, **GEOM)
    assert [c.condition for c in corr.chain()] == [None, "layer_energy", "shower_width"]
    back = QuantileCorrection.load(corr.save(tmp_path / "width.qmap.npz"))
    np.testing.assert_array_equal(back.cell_deta, DETA)
    np.testing.assert_array_equal(back.cell_neta, NETA)
    assert back.condition == "shower_width" and back.base.condition == "layer_energy"
    ee = np.exp(rng.uniform(np.log(5.0), np.log(100.0), len(e)))
    x = _showers(rng, ee, True)
    want = corr.apply(x, ee)
    np.testing.assert_array_equal(back.apply(x, ee), want)
    assert np.abs(want - two.apply(x, ee)).max() > 1e-2 * ee.min()  # the third pass changes something
    with torch.no_grad():
        got = back.torch_module()(torch.as_tensor(x), torch.as_tensor(ee, dtype=torch.float32)).numpy()
    assert np.abs(got - want).max() / ee.min() < 5e-4


def test_bad_geometry_and_files_give_one_config_error(tmp_path):
    rng = np.random.default_rng(63)
    e = np.repeat([10.0, 100.0], 300)
    x = _showers(rng, e, False)
    for kw in (dict(cell_deta=DETA), dict(cell_neta=NETA), dict(cell_deta=DETA, cell_neta=[3]),
               dict(cell_deta=DETA, cell_neta=[3, 4]), dict(cell_deta=[0.003, 0.0], cell_neta=NETA)):  # fmt: skip
        with pytest.raises(ConfigError, match="shower_width needs"):
            QuantileCorrection.fit(x, e, x, e, SIZES, condition="shower_width", **kw)
    corr = QuantileCorrection.fit(x, e, x, e, SIZES, condition="shower_width", **GEOM)
    path = corr.save(tmp_path / "w.npz")
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    for drop, msg in (("cell_neta", "cell_neta"), ("cell_deta", "cell_deta")):
        np.savez(tmp_path / "bad.npz", **{k: v for k, v in arrays.items() if k != drop})
        with pytest.raises(ConfigError, match=msg):
            QuantileCorrection.load(tmp_path / "bad.npz")


def test_the_cli_fits_shower_width_into_onnx(tmp_path, capsys):
    """``lhcml fastcalo quantile-map CKPT TRAIN --condition shower_width --second-pass --onnx`` on a tiny real-binning
    checkpoint: onnxruntime gives apply() (float32 rounding); the binning's cell widths and eta-cell counts stored."""
    from _fastcalo_helpers import corrected_onnx_matches_apply

    corr, _ = corrected_onnx_matches_apply(tmp_path, capsys, ["--condition", "shower_width", "--condition-bins", "2",
                                                              "--second-pass"], data_seed=48, n=400)  # fmt: skip
    assert corr.condition == "shower_width" and corr.base is not None
    np.testing.assert_allclose(corr.cell_deta[:3], [0.003125, 0.025, 0.05])
    np.testing.assert_array_equal(corr.cell_neta[:3], [57, 7, 5])
