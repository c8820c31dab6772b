"""The quantile correction conditioned on where the particle hits inside each layer's η cell
(``QuantileCorrection.fit(condition="eta_phase", cell_deta=...)``, ``lhcml fastcalo quantile-map --condition
eta_phase``; issue 15, h25a).

* known answer: a detailed layer of two cells in η whose split follows the impact position inside the cell (the
  shower's centroid follows it), a generator with the same marginals but a split unrelated to it — the plain map
  leaves it, the eta_phase map restores the split per phase;
* layer energies kept; the torch module (the ONNX graph's version) computes the same map; save / load round trip
  (the cell widths stored); missing |η|, missing or bad cell widths give one ConfigError.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _fastcalo_helpers import assert_reloaded_chain_agrees

from lhcml.errors import ConfigError
from lhcml.models.fastcalo.quantile_map import QuantileCorrection

#: layer 0: two cells in eta (width 0.025) whose split follows the impact phase in the "detailed" sample; layer 1:
#: three plain cells (width 0.05)
SIZES = [2, 3]
DETA = [0.025, 0.05]


def _showers(rng, e, eta, follows: bool):
    """``(N, 5)`` GeV. Layer 0 holds ``0.5 E`` split into cell 0's share ``s = 0.8 - 0.6 p + N(0, 0.03)`` with
    ``p = |eta| / 0.025 mod 1`` (``follows``: the detailed shower) or ``p ~ U(0, 1)`` (the generator: the same
    marginal of ``s``, unrelated to the impact); layer 1: three log-normal cells, the same in both."""
    n = len(e)
    p = np.mod(np.abs(eta) / DETA[0], 1.0) if follows else rng.uniform(0.0, 1.0, n)
    s = np.clip(0.8 - 0.6 * p + rng.normal(0.0, 0.03, n), 0.02, 0.98)
    out = np.empty((n, 5))
    out[:, 0], out[:, 1] = 0.5 * s, 0.5 * (1.0 - s)
    out[:, 2:] = 0.05 * np.exp(rng.normal(0.0, 0.5, (n, 3)))
    return (out * e[:, None]).astype(np.float32)


def _share_by_phase(x, eta, n_bins=5):
    p = np.mod(np.abs(eta) / DETA[0], 1.0)
    s = x[:, 0] / (x[:, 0] + x[:, 1])
    idx = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    return np.array([s[idx == i].mean() for i in range(n_bins)])


def _sample(seed: int, n: int = 5000):
    rng = np.random.default_rng(seed)
    e = np.repeat([10.0, 100.0], n)
    eta = rng.uniform(0.0, 1.37, 2 * n)
    return rng, e, eta


def test_the_phase_map_restores_the_split_the_plain_map_cannot():
    """Per fifth of the cell the detailed mean share of cell 0 is 0.74, 0.62, 0.50, 0.38, 0.26; the generator gives
    0.50 everywhere. The plain map leaves the outer fifths > 0.2 off; the eta_phase map (5 bins) brings every fifth
    within 0.035; the layer energies are kept; as a second pass the same."""
    rng, e, eta = _sample(41)
    gen, ref = _showers(rng, e, eta, False), _showers(rng, e, eta, True)
    eta2 = rng.uniform(0.0, 1.37, len(e))
    fresh = _showers(rng, e, eta2, False)
    want = _share_by_phase(_showers(rng, e, eta2, True), eta2)
    np.testing.assert_allclose(want, [0.74, 0.62, 0.50, 0.38, 0.26], atol=0.01)  # the construction
    plain = QuantileCorrection.fit(gen, e, ref, e, SIZES)
    kw = dict(gen_eta=eta, ref_eta=eta, condition="eta_phase", condition_bins=5, cell_deta=DETA)
    for corr in (QuantileCorrection.fit(gen, e, ref, e, SIZES, **kw),
                 QuantileCorrection.fit(gen, e, ref, e, SIZES, second_pass=True, **kw)):  # fmt: skip
        got = corr.apply(fresh, e, eta2)
        err = np.abs(_share_by_phase(got, eta2) - want)
        assert err.max() < 0.035, (_share_by_phase(got, eta2), want)
        np.testing.assert_allclose(got[:, :2].sum(1), fresh[:, :2].sum(1), rtol=1e-5)  # the layer energy kept
    err_plain = np.abs(_share_by_phase(plain.apply(fresh, e), eta2) - want)
    assert err_plain[[0, -1]].min() > 0.2, err_plain
    with pytest.raises(ConfigError, match="give each shower's eta"):
        corr.apply(fresh, e)


def test_the_torch_module_and_the_file_round_trip(tmp_path):
    """The graph's version gives apply's showers to float32 rounding (given |eta|); saved and loaded, the map and
    its cell widths are the same."""
    rng, e, eta = _sample(42, 3000)
    gen, ref = _showers(rng, e, eta, False), _showers(rng, e, eta, True)
    corr = QuantileCorrection.fit(gen, e, ref, e, SIZES, gen_eta=eta, ref_eta=eta, condition="eta_phase",
                                  condition_bins=4, cell_deta=DETA, second_pass=True)  # fmt: skip
    back = QuantileCorrection.load(corr.save(tmp_path / "phase.qmap.npz"))
    np.testing.assert_array_equal(back.cell_deta, DETA)
    assert back.condition == "eta_phase" and back.base is not None
    ee = np.exp(rng.uniform(np.log(2.0), np.log(100.0), len(e)))
    eta2 = rng.uniform(0.0, 1.37, len(e))
    x = _showers(rng, ee, eta2, False)
    want = corr.apply(x, ee, eta2)
    np.testing.assert_array_equal(back.apply(x, ee, eta2), want)
    with torch.no_grad():
        got = back.torch_module()(torch.as_tensor(x), torch.as_tensor(ee, dtype=torch.float32),
                                  torch.as_tensor(eta2, dtype=torch.float32)).numpy()  # fmt: skip
    assert np.abs(want - x).max() > 1e-2 * ee.min()  # it corrects something
    assert np.abs(got - want).max() / ee.min() < 5e-4


def test_bad_arguments_and_files_give_one_config_error(tmp_path):
    rng, e, eta = _sample(43, 500)
    x = _showers(rng, e, eta, True)
    for kw, msg in ((dict(gen_eta=eta, ref_eta=eta), "cell width"),
                    (dict(gen_eta=eta, ref_eta=eta, cell_deta=[0.025]), "cell width"),
                    (dict(gen_eta=eta, ref_eta=eta, cell_deta=[0.025, 0.0]), "cell width"),
                    (dict(cell_deta=DETA), "needs both samples' \\|eta\\|")):  # fmt: skip
        with pytest.raises(ConfigError, match=msg):
            QuantileCorrection.fit(x, e, x, e, SIZES, condition="eta_phase", **kw)
    corr = QuantileCorrection.fit(x, e, x, e, SIZES, gen_eta=eta, ref_eta=eta, condition="eta_phase", cell_deta=DETA)
    path = corr.save(tmp_path / "p.npz")
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays.pop("cell_deta")
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ConfigError, match="cell_deta"):
        QuantileCorrection.load(tmp_path / "bad.npz")


def test_condition_layers_leaves_the_other_layers_on_the_plain_map():
    """``condition_layers=[1]``: layer 0's split is left as the plain map leaves it (every bin holds the node's map),
    layer 1 is conditioned; a bad index is one ConfigError."""
    rng, e, eta = _sample(44)
    gen, ref = _showers(rng, e, eta, False), _showers(rng, e, eta, True)
    kw = dict(gen_eta=eta, ref_eta=eta, condition="eta_phase", condition_bins=5, cell_deta=DETA)
    only1 = QuantileCorrection.fit(gen, e, ref, e, SIZES, condition_layers=[1], **kw)
    plain = QuantileCorrection.fit(gen, e, ref, e, SIZES)
    eta2 = rng.uniform(0.0, 1.37, len(e))
    fresh = _showers(rng, e, eta2, False)
    np.testing.assert_allclose(only1.apply(fresh, e, eta2)[:, :2], plain.apply(fresh, e)[:, :2], rtol=1e-5, atol=1e-7)
    for t in (only1.q_gen, only1.q_ref):
        np.testing.assert_array_equal(t[:, :, 0, :2], t[:, :, -1, :2])  # layer 0: the same map in every bin
    assert only1.meta["condition_layers"] == [1] and only1.meta["cond_layers_pooled"] >= 2
    for bad in ([2], [], [-1]):
        with pytest.raises(ConfigError, match="condition_layers"):
            QuantileCorrection.fit(gen, e, ref, e, SIZES, condition_layers=bad, **kw)
    with pytest.raises(ConfigError, match="condition_layers"):
        QuantileCorrection.fit(gen, e, ref, e, SIZES, condition_layers=[0])


def test_a_further_pass_after_a_two_pass_correction(tmp_path):
    """``after=``: a two-pass correction (plain, then layer_energy) extended by an eta_phase map on layer 0 is the
    composition, exactly; it restores the split per phase (every fifth within 0.035); the three-pass file round-trips
    (its earlier passes under base_* and base_base_*) and the torch module is the same composition."""
    rng, e, eta = _sample(45)
    gen, ref = _showers(rng, e, eta, False), _showers(rng, e, eta, True)
    two = QuantileCorrection.fit(gen, e, ref, e, SIZES, condition="layer_energy", condition_bins=3, second_pass=True)
    three = QuantileCorrection.fit(gen, e, ref, e, SIZES, gen_eta=eta, ref_eta=eta, condition="eta_phase",
                                   condition_bins=5, cell_deta=DETA, condition_layers=[0], after=two)  # fmt: skip
    alone = QuantileCorrection.fit(two.apply(gen, e), e, ref, e, SIZES, gen_eta=eta, ref_eta=eta, condition="eta_phase",
                                   condition_bins=5, cell_deta=DETA, condition_layers=[0])  # fmt: skip
    eta2 = rng.uniform(0.0, 1.37, len(e))
    fresh = _showers(rng, e, eta2, False)
    out = three.apply(fresh, e, eta2)
    np.testing.assert_array_equal(out, alone.apply(two.apply(fresh, e), e, eta2))
    want = _share_by_phase(_showers(rng, e, eta2, True), eta2)
    assert np.abs(_share_by_phase(out, eta2) - want).max() < 0.035
    assert three.meta["passes"] == 3 and three.base is two
    path = three.save(tmp_path / "three.qmap.npz")
    with np.load(path) as f:
        assert {"base_cond_nodes", "base_base_q_gen", "cell_deta"} <= set(f.files) and "base_cell_deta" not in f.files
    back = QuantileCorrection.load(path)
    assert back.base.condition == "layer_energy" and back.base.base.condition is None
    np.testing.assert_array_equal(assert_reloaded_chain_agrees(three, path, fresh, e, eta2), out)
    with pytest.raises(ConfigError, match="further pass"):
        QuantileCorrection.fit(gen, e, ref, e, SIZES, after=two)


def test_the_cli_fits_eta_phase_on_the_middle_layer_and_a_further_pass_into_onnx(tmp_path, capsys):
    """``lhcml fastcalo quantile-map CKPT TRAIN --condition eta_phase --condition-layer middle --second-pass --onnx``
    on a tiny real-binning checkpoint: onnxruntime gives apply() (float32 rounding); only the middle layer is
    conditioned; ``--after`` that file with ``--condition layer_energy`` writes a three-pass file; an unknown layer
    exits 2 without a traceback."""
    from _fastcalo_helpers import corrected_onnx_matches_apply

    from lhcml import cli
    from lhcml.models.fastcalo.quantile_map import correction_path

    corr, _ = corrected_onnx_matches_apply(tmp_path, capsys, ["--condition", "eta_phase", "--condition-bins", "2",
                                                              "--condition-layer", "middle", "--second-pass"],
                                           data_seed=46, n=400)  # fmt: skip
    assert corr.condition == "eta_phase" and corr.meta["condition_layers"] == [1] and corr.base is not None
    np.testing.assert_allclose(corr.cell_deta[:3], [0.003125, 0.025, 0.05])
    ckpt = next(tmp_path.glob("*.ckpt"))
    first = tmp_path / "two.qmap.npz"
    correction_path(ckpt).rename(first)
    with pytest.raises(SystemExit) as exc:
        cli.main(["fastcalo", "quantile-map", str(ckpt), str(tmp_path / "train.h5"), "--quantiles", "8", "--condition",
                  "layer_energy", "--condition-bins", "2", "--after", str(first)])  # fmt: skip
    assert exc.value.code in (0, None) and f"as pass 3 after {first}" in capsys.readouterr().out
    three = QuantileCorrection.load(correction_path(ckpt))
    assert three.condition == "layer_energy" and three.base.condition == "eta_phase" and three.base.base is not None
    with pytest.raises(SystemExit) as exc:
        cli.main(["fastcalo", "quantile-map", str(ckpt), str(tmp_path / "train.h5"), "--condition", "eta_phase",
                  "--condition-layer", "presampler", "-o", str(tmp_path / "x.npz")])  # fmt: skip
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "unknown layer" in err and "Traceback" not in err


def test_an_energy_only_generator_cannot_take_an_eta_phase_pass_into_its_graph():
    """The graph of a generator without an eta input cannot feed an eta_phase pass, also when it is an earlier pass
    of a chain: one ConfigError at export."""
    from types import SimpleNamespace

    from lhcml.export.fastcalo import _corrected

    rng, e, eta = _sample(47, 500)
    x = _showers(rng, e, eta, True)
    phase = QuantileCorrection.fit(x, e, x, e, SIZES, gen_eta=eta, ref_eta=eta, condition="eta_phase", cell_deta=DETA,
                                   second_pass=True)  # fmt: skip
    chain = QuantileCorrection.fit(x, e, x, e, SIZES, gen_eta=eta, ref_eta=eta, condition="layer_energy", after=phase)
    for corr in (phase, chain):
        with pytest.raises(ConfigError, match="needs a generator conditioned on"):
            _corrected(None, corr, SimpleNamespace(conditions_on_eta=False))
