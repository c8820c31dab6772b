"""The layer-energy pass of the quantile correction (``QuantileCorrection.fit(level="layers")``, ``lhcml fastcalo
quantile-map --layer-energies``; issue 15, h26b).

* known answer: a generator whose first layer takes 0.30 of the shower instead of 0.25 — the cell maps keep every
  layer's generated energy (``energy_layers``), so they leave 0.30; the layer pass brings it to 0.25 ± 0.005, keeps
  the total energy and each layer's shape (its cells' shares);
* as a further pass (``after=``) on a two-pass chain: save / load round trip, the torch module (the ONNX graph's
  version) agrees; a cell correction's file has no ``level`` key (files as before); bad arguments give one
  ConfigError.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from _fastcalo_helpers import assert_reloaded_chain_agrees

from lhcml.errors import ConfigError
from lhcml.models.fastcalo.quantile_map import QuantileCorrection

SIZES = [3, 6, 2]


def _showers(rng, e, f0_mean):
    """``(N, 11)`` GeV, total 0.98 E: layer 0 takes ``N(f0_mean, 0.05)`` of it, layer 2 a log-normal ~0.02, layer 1 the
    rest; inside each layer Dirichlet(1) shares."""
    n = len(e)
    f0 = np.clip(rng.normal(f0_mean, 0.05, n), 0.01, 0.9)
    f2 = 0.02 * np.exp(rng.normal(0.0, 0.5, n))
    out = np.empty((n, 11))
    for (a, b), f in zip(((0, 3), (3, 9), (9, 11)), (f0, 1.0 - f0 - f2, f2), strict=True):
        out[:, a:b] = rng.dirichlet(np.ones(b - a), n) * f[:, None]
    return (out * 0.98 * e[:, None]).astype(np.float32)


def _f0(x):
    return x[:, :3].sum(1) / x.sum(1)


def _sample(seed, n=4000):
    rng = np.random.default_rng(seed)
    e = np.repeat([10.0, 100.0], n)
    return rng, e, rng.uniform(0.0, 1.3, 2 * n)


def test_the_layer_pass_moves_the_layer_fractions_the_cell_maps_keep():
    rng, e, eta = _sample(71)
    gen, ref = _showers(rng, e, 0.30), _showers(rng, e, 0.25)
    fresh = _showers(rng, e, 0.30)
    cells = QuantileCorrection.fit(gen, e, ref, e, SIZES)
    np.testing.assert_allclose(_f0(cells.apply(fresh, e)), _f0(fresh), atol=1e-5)  # the cell maps keep it
    layers = QuantileCorrection.fit(gen, e, ref, e, SIZES, level="layers", eta_bins=2, gen_eta=eta, ref_eta=eta)
    got = layers.apply(fresh, e, eta)
    assert abs(_f0(got).mean() - 0.25) < 0.005 and abs(_f0(fresh).mean() - 0.30) < 0.005
    assert abs(np.std(_f0(got)) - np.std(_f0(ref))) < 0.005
    np.testing.assert_allclose(got.sum(1), fresh.sum(1), rtol=1e-5)  # the total kept
    for a, b in ((0, 3), (3, 9), (9, 11)):  # each layer's shape kept
        np.testing.assert_allclose(got[:, a:b] / got[:, a:b].sum(1, keepdims=True),
                                   fresh[:, a:b] / fresh[:, a:b].sum(1, keepdims=True), atol=1e-5)  # fmt: skip


def test_a_further_layer_pass_round_trips_and_the_torch_module_agrees(tmp_path):
    rng, e, eta = _sample(72, 3000)
    gen, ref = _showers(rng, e, 0.30), _showers(rng, e, 0.25)
    two = QuantileCorrection.fit(gen, e, ref, e, SIZES, condition="layer_energy", second_pass=True)
    with np.load(two.save(tmp_path / "two.npz")) as f:
        assert "level" not in json.loads(str(f["meta"]))  # a cell correction's file as before
    corr = QuantileCorrection.fit(gen, e, ref, e, SIZES, level="layers", after=two, eta_bins=2, gen_eta=eta,
                                  ref_eta=eta)  # fmt: skip
    assert [c.level for c in corr.chain()] == ["cells", "cells", "layers"] and corr.meta["passes"] == 3
    saved = corr.save(tmp_path / "layers.npz")
    assert [c.level for c in QuantileCorrection.load(saved).chain()] == ["cells", "cells", "layers"]
    ee = np.exp(rng.uniform(np.log(5.0), np.log(100.0), len(e)))
    x = _showers(rng, ee, 0.30)
    want = assert_reloaded_chain_agrees(corr, saved, x, ee, eta)
    assert abs(_f0(want).mean() - _f0(two.apply(x, ee)).mean()) > 0.03  # the last pass moves the fraction


def test_bad_layer_pass_arguments_give_one_config_error():
    rng, e, _ = _sample(73, 200)
    x = _showers(rng, e, 0.25)
    with pytest.raises(ConfigError, match="level must be one of"):
        QuantileCorrection.fit(x, e, x, e, SIZES, level="voxels")
    with pytest.raises(ConfigError, match="plain map"):
        QuantileCorrection.fit(x, e, x, e, SIZES, level="layers", condition="layer_energy")
    c = QuantileCorrection.fit(x, e, x, e, SIZES, level="layers")
    with pytest.raises(ConfigError, match="plain map of variable share"):
        QuantileCorrection("energy", SIZES, c.log_e_nodes, c.eta_nodes, c.levels, c.p_gen, c.p_ref, c.q_gen, c.q_ref,
                           level="layers")  # fmt: skip


def test_the_cli_fits_a_layer_pass_into_onnx(tmp_path, capsys):
    """``lhcml fastcalo quantile-map CKPT TRAIN --layer-energies --onnx`` on a tiny real-binning checkpoint:
    onnxruntime gives apply() (float32 rounding)."""
    from _fastcalo_helpers import corrected_onnx_matches_apply

    corr, _ = corrected_onnx_matches_apply(tmp_path, capsys, ["--layer-energies"], data_seed=49, n=400)
    assert corr.level == "layers" and corr.variable == "share" and corr.p_gen.shape[-1] == len(corr.layer_sizes)
