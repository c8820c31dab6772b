"""The conditional quantile correction (``QuantileCorrection.fit(condition="layer_energy")``,
``lhcml fastcalo quantile-map --condition``; issue 15, docs/benchmarks/fastcalo.md, h24b).

* known answer: a generator whose layer energies and cell spectra are right on their own but whose lateral shape
  does not follow the layer energy (the detailed one does) — a correlation a per-voxel map cannot change: the
  plain map leaves it, the conditional map restores the detailed shape per bin of the layer energy;
* layer energies kept; a sample mapped onto itself is (nearly) unchanged;
* save / load round trip; a plain file is written exactly as before (no new array, no new key) and still loads;
  bad conditional files and bad arguments give one ConfigError;
* the torch module (the ONNX graph's version) computes the same map; the CLI option writes a conditional file that
  the harness's ``generate_sample`` applies.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _fastcalo_helpers import (
    checkpoint_and_training_file,
    corrected_onnx_matches_apply,
    rewrite_npz,
)

from lhcml.errors import ConfigError
from lhcml.models.fastcalo.quantile_map import (
    FORMAT,
    FORMAT_CONDITIONAL,
    QuantileCorrection,
    correction_path,
)

#: layer 0: two cells whose split follows the layer energy in the "detailed" sample; layer 1: 3 plain cells
SIZES = [2, 3]


def _showers(rng, e, correlated: bool):
    """``(N, 5)`` GeV. Layer 0 holds ``f E`` with ``f ~ U(0.2, 0.8)``, split into cell 0's share
    ``s = 0.2 + 0.6 t + N(0, 0.03)`` and cell 1's ``1 - s``, with ``t = (f - 0.2) / 0.6`` (``correlated``: the
    detailed shower, the split follows the layer energy) or ``t ~ U(0, 1)`` independent of ``f`` (the generator:
    the same marginals of ``f`` and ``s``, no correlation); layer 1: three log-normal cells, the same in both."""
    n = len(e)
    f = rng.uniform(0.2, 0.8, n)
    t = (f - 0.2) / 0.6 if correlated else rng.uniform(0.0, 1.0, n)
    s = np.clip(0.2 + 0.6 * t + rng.normal(0.0, 0.03, n), 0.02, 0.98)
    out = np.empty((n, 5))
    out[:, 0], out[:, 1] = f * s, f * (1.0 - s)
    out[:, 2:] = 0.05 * np.exp(rng.normal(0.0, 0.5, (n, 3)))
    return (out * e[:, None]).astype(np.float32)


def _share_by_layer_energy(x, e, n_bins=5):
    """Mean share of cell 0 in layer 0 per equal-width bin of the layer-0 fraction ``f`` in [0.2, 0.8]."""
    f = (x[:, 0] + x[:, 1]) / e
    s = x[:, 0] / (x[:, 0] + x[:, 1])
    idx = np.clip(((f - 0.2) / 0.6 * n_bins).astype(int), 0, n_bins - 1)
    return np.array([s[idx == i].mean() for i in range(n_bins)])


def test_the_conditional_map_restores_a_correlation_the_plain_map_cannot():
    """Known answer: per fifth of the layer energy the detailed mean share of cell 0 is 0.26, 0.38, 0.50, 0.62, 0.74
    (0.2 + 0.6 t at the bin centre); the generator gives 0.50 everywhere. The plain map recovers only what the cells'
    marginals carry (the cell energy is f s) and leaves the outer fifths > 0.08 off; the conditional map (5 bins)
    brings every fifth within 0.035 of the detailed value. 2 energy nodes x 5 000 showers."""
    rng = np.random.default_rng(21)
    e = np.repeat([10.0, 100.0], 5000)
    gen, ref = _showers(rng, e, correlated=False), _showers(rng, e, correlated=True)
    fresh = _showers(rng, e, correlated=False)
    want = _share_by_layer_energy(_showers(rng, e, correlated=True), e)
    np.testing.assert_allclose(want, [0.26, 0.38, 0.50, 0.62, 0.74], atol=0.01)  # the construction
    plain = QuantileCorrection.fit(gen, e, ref, e, SIZES)
    cond = QuantileCorrection.fit(gen, e, ref, e, SIZES, condition="layer_energy", condition_bins=5)
    got_plain = _share_by_layer_energy(plain.apply(fresh, e), e)
    got_cond = _share_by_layer_energy(cond.apply(fresh, e), e)
    err_plain, err_cond = np.abs(got_plain - want), np.abs(got_cond - want)
    assert err_plain[[0, -1]].min() > 0.08, got_plain  # measured 0.097 / 0.127
    assert err_cond.max() < 0.035, (got_cond, want)  # measured 0.017
    assert (err_cond[[0, -1]] < err_plain[[0, -1]] / 3).all()
    # both keep every layer's energy
    for corr in (plain, cond):
        out = corr.apply(fresh, e)
        for sl in corr.layer_slices:
            np.testing.assert_allclose(out[:, sl].sum(1), fresh[:, sl].sum(1), rtol=1e-5)
    assert cond.meta["format"] == FORMAT_CONDITIONAL and cond.meta["condition_bins"] == 5
    assert cond.cond_nodes.shape == (1, 2, 2, 5)


def test_the_other_conditioning_variables():
    """``layer_energy``, ``layer_peak`` (hottest cell over the layer energy) and ``depth`` (sum_L L E_L / sum_L E_L,
    one value per shower, every layer) on hand-made showers (an empty shower gives zeros); an unknown one is refused."""
    from lhcml.models.fastcalo.quantile_map import _condition_values, _layer_slices

    x = np.array([[1.0, 3.0, 0.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    sl = _layer_slices(SIZES)
    np.testing.assert_allclose(_condition_values(x, np.array([10.0, 10.0]), sl, "layer_energy"), [[0.4, 0.4], [0, 0]])
    np.testing.assert_allclose(_condition_values(x, np.array([10.0, 10.0]), sl, "layer_peak"), [[0.75, 0.5], [0, 0]])
    np.testing.assert_allclose(_condition_values(x, np.array([10.0, 10.0]), sl, "depth"), [[0.5, 0.5], [0, 0]])
    with pytest.raises(ConfigError, match="layer_energy, layer_peak, depth"):
        QuantileCorrection.fit(x, np.ones(2), x, np.ones(2), SIZES, condition="width")


def test_a_sample_mapped_onto_itself_is_nearly_unchanged_and_empty_layers_fall_back():
    """The detailed sample mapped onto itself: unchanged up to the interpolation between bins (median |ln ratio|
    tiny); a layer that is empty in most showers cannot be split and keeps the node's (plain) map."""
    rng = np.random.default_rng(22)
    e = np.repeat([10.0, 100.0], 3000)
    a = _showers(rng, e, correlated=True)
    a[rng.random(len(e)) < 0.8, 2:] = 0.0  # layer 1 empty in 80 % of the showers: its fraction has ties at 0
    c = QuantileCorrection.fit(a, e, a, e, SIZES, condition="layer_energy", condition_bins=3)
    out = c.apply(a, e)
    assert ((out == 0) == (a == 0)).all()
    assert np.median(np.abs(np.log(out[a > 0] / a[a > 0]))) < 0.01
    assert c.meta["cond_layers_pooled"] == 2  # layer 1 at both energy nodes
    for h in range(2):
        np.testing.assert_array_equal(c.q_gen[0, h, 0, 2:], c.q_gen[0, h, 2, 2:])


def _conditional(n_bins=3, condition="layer_energy"):
    rng = np.random.default_rng(23)
    e = np.repeat([5.0, 50.0], 1500)
    return QuantileCorrection.fit(_showers(rng, e, False), e, _showers(rng, e, True), e, SIZES, n_quantiles=16,
                                  condition=condition, condition_bins=n_bins), e  # fmt: skip


def test_save_load_round_trip_and_the_plain_file_is_unchanged(tmp_path):
    c, e = _conditional()
    back = QuantileCorrection.load(c.save(tmp_path / "c.qmap.npz"))
    x = _showers(np.random.default_rng(24), e, False)
    np.testing.assert_array_equal(back.apply(x, e), c.apply(x, e))
    assert back.condition == "layer_energy" and back.cond_nodes.shape == (1, 2, 2, 3)
    with np.load(tmp_path / "c.qmap.npz") as f:
        assert "cond_nodes" in f.files and json.loads(str(f["meta"]))["format"] == FORMAT_CONDITIONAL
    # a plain correction: the same arrays and keys as the plain format always had, loads as plain
    rng = np.random.default_rng(25)
    plain = QuantileCorrection.fit(_showers(rng, e, False), e, _showers(rng, e, True), e, SIZES, n_quantiles=16)
    with np.load(plain.save(tmp_path / "p.qmap.npz")) as f:
        assert sorted(f.files) == sorted(["meta", "log_e_nodes", "eta_nodes", "levels", "p_gen", "p_ref", "q_gen",
                                          "q_ref"])  # fmt: skip
        meta = json.loads(str(f["meta"]))
    assert meta["format"] == FORMAT and not {"condition", "condition_bins", "cond_layers_pooled"} & set(meta)
    p2 = QuantileCorrection.load(tmp_path / "p.qmap.npz")
    assert p2.condition is None and p2.cond_nodes is None
    np.testing.assert_array_equal(p2.apply(x, e), plain.apply(x, e))


def test_bad_conditional_files_and_arguments_give_one_config_error(tmp_path):
    c, e = _conditional()
    good = c.save(tmp_path / "good.npz")
    with np.load(good) as f:
        meta, nodes, q = json.loads(str(f["meta"])), f["cond_nodes"].copy(), f["q_gen"]
    flat = nodes.copy()
    flat[0, 0, 0, 1] = flat[0, 0, 0, 0]
    plain_meta = {**meta, "format": FORMAT}
    cases = {
        rewrite_npz(good, tmp_path / "nonodes.npz", cond_nodes=None): "lacks cond_nodes",
        rewrite_npz(good, tmp_path / "cond.npz", meta=np.array(json.dumps({**meta, "condition": "width"}))): "condition",
        rewrite_npz(good, tmp_path / "flat.npz", cond_nodes=flat): "strictly increasing",
        rewrite_npz(good, tmp_path / "nshape.npz", cond_nodes=nodes[:, :, :1]): "cond_nodes has shape",
        rewrite_npz(good, tmp_path / "qshape.npz", q_gen=q[:, :, :2]): "q_gen has shape",
        # a conditional file's tables labelled plain: the shapes do not fit the plain format
        rewrite_npz(good, tmp_path / "asplain.npz", meta=np.array(json.dumps(plain_meta))): "p_gen has shape",
        rewrite_npz(good, tmp_path / "fmt.npz", meta=np.array(json.dumps({**meta, "format": "x-3"}))): "format",
    }
    for path, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            QuantileCorrection.load(path)
    rng = np.random.default_rng(26)
    x = _showers(rng, e, False)
    with pytest.raises(ConfigError, match="condition must be one of layer_energy"):
        QuantileCorrection.fit(x, e, x, e, SIZES, condition="width")
    with pytest.raises(ConfigError, match="condition_bins >= 2"):
        QuantileCorrection.fit(x, e, x, e, SIZES, condition="layer_energy", condition_bins=1)
    with pytest.raises(ConfigError, match=r"\(N, 5\)"):
        c.apply(x[:, :-1], e)


@pytest.mark.parametrize("n_bins,condition", [(2, "layer_energy"), (4, "layer_energy"), (3, "layer_peak"),
                                              (3, "depth")])  # fmt: skip
def test_the_torch_module_computes_the_same_conditional_correction(n_bins, condition):
    """The graph's version gives apply's showers to float32 rounding, on the energy nodes and between them."""
    c, e = _conditional(n_bins, condition)
    assert c.meta["cond_layers_pooled"] < c.cond_nodes[..., 0].size  # some layer is conditioned
    m = c.torch_module()
    rng = np.random.default_rng(27)
    for ee in (e, np.exp(rng.uniform(np.log(2.0), np.log(100.0), len(e)))):
        x = _showers(rng, ee, False)
        want = c.apply(x, ee)
        with torch.no_grad():
            got = m(torch.as_tensor(x), torch.as_tensor(ee, dtype=torch.float32)).numpy()
        assert np.abs(want - x).max() > 1e-3 * ee.min()  # it corrects something
        assert np.abs(got - want).max() / ee.min() < 5e-4


def test_the_cli_option_writes_a_conditional_file_the_harness_applies(tmp_path, capsys):
    """``lhcml fastcalo quantile-map --condition layer_energy --second-pass`` on a tiny checkpoint: a conditional file beside it
    that ``generate_sample`` applies (layer energies kept, other cells than the plain map's); a bad condition exits
    2 without a traceback."""
    from lhcml import cli
    from lhcml.data.calochallenge import read_showers
    from lhcml.tasks.fastcalo.dataset import generate_sample
    from lhcml.train.fastcalo import load_generator

    m, b, ckpt = checkpoint_and_training_file(tmp_path, data_seed=28, noise_seed=3)
    plain_file = tmp_path / "plain.qmap.npz"
    for extra in (["-o", str(plain_file)], ["--condition", "layer_energy", "--condition-bins", "2", "--second-pass"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(["fastcalo", "quantile-map", str(ckpt), str(tmp_path / "train.h5"), "--quantiles", "8", *extra])
        assert exc.value.code in (0, None)
    assert "conditioned on layer_energy in 2 bins" in capsys.readouterr().out
    corr = QuantileCorrection.load(correction_path(ckpt))
    assert corr.condition == "layer_energy" and corr.base is not None  # --second-pass: the plain map inside
    model, _ = load_generator(ckpt)
    corr.check_model(model)
    ref = read_showers(tmp_path / "train.h5", b)
    raw = generate_sample(model, ref, 7)
    fixed = generate_sample(model, ref, 7, correction=corr)
    plain = generate_sample(model, ref, 7, correction=QuantileCorrection.load(plain_file))
    assert np.abs(fixed.showers - raw.showers).max() > 0 and np.abs(fixed.showers - plain.showers).max() > 0
    for sl in b.layer_slices:
        np.testing.assert_allclose(fixed.showers[:, sl].sum(1), raw.showers[:, sl].sum(1), rtol=1e-5, atol=1e-9)
    with pytest.raises(SystemExit) as exc:
        cli.main(["fastcalo", "quantile-map", str(ckpt), str(tmp_path / "train.h5"), "--condition", "width",
                  "-o", str(tmp_path / "x.npz")])  # fmt: skip
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "condition" in err and "Traceback" not in err


def test_the_onnx_graph_with_a_conditional_correction(tmp_path, capsys):
    """``lhcml fastcalo quantile-map --condition layer_energy --onnx``: onnxruntime gives apply() on the PyTorch
    sampler's showers for the same noise (float32 rounding); the metadata name the conditional format."""
    corr, meta = corrected_onnx_matches_apply(tmp_path, capsys, ["--condition", "layer_energy", "--condition-bins", "3"],
                                              data_seed=29, n=400)  # fmt: skip
    assert corr.condition == "layer_energy" and corr.meta["cond_layers_pooled"] < corr.cond_nodes[..., 0].size
    assert json.loads(meta["quantile_correction"])["format"] == FORMAT_CONDITIONAL



def test_the_second_pass_is_the_conditional_map_after_the_plain_one(tmp_path):
    """``second_pass=True``: the plain map is fitted first, the conditional one on its output; apply() is the
    composition, exactly; the known answer holds (every fifth within 0.035); the file keeps both (round trip), a
    file whose first pass is incomplete is one ConfigError; the torch module is the same composition."""
    rng = np.random.default_rng(30)
    e = np.repeat([10.0, 100.0], 5000)
    gen, ref = _showers(rng, e, correlated=False), _showers(rng, e, correlated=True)
    fresh = _showers(rng, e, correlated=False)
    want = _share_by_layer_energy(_showers(rng, e, correlated=True), e)
    two = QuantileCorrection.fit(gen, e, ref, e, SIZES, condition="layer_energy", condition_bins=5, second_pass=True)
    plain = QuantileCorrection.fit(gen, e, ref, e, SIZES)
    second = QuantileCorrection.fit(plain.apply(gen, e), e, ref, e, SIZES, condition="layer_energy", condition_bins=5)
    out = two.apply(fresh, e)
    np.testing.assert_array_equal(out, second.apply(plain.apply(fresh, e), e))
    assert np.abs(_share_by_layer_energy(out, e) - want).max() < 0.035
    assert two.meta["second_pass"] and two.base is not None and two.base.condition is None
    back = QuantileCorrection.load(two.save(tmp_path / "two.qmap.npz"))
    np.testing.assert_array_equal(back.apply(fresh, e), out)
    assert back.base is not None and back.meta["base"]["format"] == FORMAT
    with torch.no_grad():
        got = back.torch_module()(torch.as_tensor(fresh), torch.as_tensor(e, dtype=torch.float32)).numpy()
    assert np.abs(got - out).max() / e.min() < 5e-4
    with pytest.raises(ConfigError, match="without a complete plain first pass"):
        QuantileCorrection.load(rewrite_npz(tmp_path / "two.qmap.npz", tmp_path / "cut.npz", base_q_ref=None))
    with pytest.raises(ConfigError, match="second pass needs a condition"):
        QuantileCorrection.fit(gen, e, ref, e, SIZES, second_pass=True)
