"""The per-cell quantile correction of generated showers (``lhcml.models.fastcalo.quantile_map``,
``lhcml fastcalo quantile-map``; issue 15, docs/benchmarks/fastcalo.md "Twenty-second version").

* identity: a sample mapped onto itself comes back unchanged (both variables, zeros included);
* known answers: cells drawn from a log-normal A with occupancy 0.7, mapped onto a log-normal B with another
  mean, width and occupancy 0.5, reproduce B's occupancy and quantiles on a fresh sample within the statistical
  tolerance; where B is filled more often than A, zeros stay zero; between two energy nodes the map is the
  displacement interpolation (half the shift at the midpoint in ln E); a correction fitted in |eta| bins uses them;
* the ``share`` and ``energy_layers`` variants keep every layer's energy and the total;
* save / load round trip; bad files and bad arguments give one ConfigError; a correction fitted for another
  sampler is refused;
* end to end on a tiny checkpoint: ``lhcml fastcalo quantile-map`` writes the file beside it, and the harness's
  ``generate_sample(correction=...)`` applies it (off: the showers as before).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _fastcalo_helpers import corrected_onnx_matches_apply, real_binning_fm_checkpoint, rewrite_npz

from lhcml.errors import ConfigError
from lhcml.models.fastcalo.quantile_map import QuantileCorrection, correction_path

SIZES = [4, 6, 3]
V = sum(SIZES)


def _cells(rng, n, mu, sigma, p, energies):
    """``(n, V)`` GeV: each cell non-zero with probability ``p``, then ``E_inc * 0.01 * exp(N(mu, sigma))``."""
    x = np.exp(rng.normal(mu, sigma, (n, V))) * (rng.random((n, V)) < p)
    return (x * 0.01 * energies[:, None]).astype(np.float32)


@pytest.mark.parametrize("variable", ["energy", "share"])
def test_a_sample_mapped_onto_itself_is_unchanged(variable):
    rng = np.random.default_rng(1)
    e = rng.choice([2.0, 20.0, 200.0], 3000)
    a = _cells(rng, len(e), 0.0, 1.5, 0.6, e)
    c = QuantileCorrection.fit(a, e, a, e, SIZES, variable=variable)
    out = c.apply(a, e)
    assert ((out == 0) == (a == 0)).all()
    np.testing.assert_allclose(out, a, rtol=2e-6, atol=0)
    # a fresh sample from the same distribution is changed only within the statistical noise of the fit
    b = _cells(rng, len(e), 0.0, 1.5, 0.6, e)
    assert np.median(np.abs(np.log(c.apply(b, e)[b > 0] / b[b > 0]))) < 0.05


def test_a_onto_b_reproduces_b_occupancy_and_quantiles():
    """Known answer (variable = energy): A = lognormal(0, 1) with occupancy 0.7, B = lognormal(0.8, 0.5) with
    occupancy 0.5; a fresh A sample after the map has B's occupancy and B's quantiles (exact ones: 0.8 + 0.5 z).
    Tolerances: 2 500 showers per energy node, 5 standard errors."""
    from scipy.stats import norm

    rng = np.random.default_rng(2)
    e = np.repeat([5.0, 50.0], 2500)
    a, b = _cells(rng, len(e), 0.0, 1.0, 0.7, e), _cells(rng, len(e), 0.8, 0.5, 0.5, e)
    c = QuantileCorrection.fit(a, e, b, e, SIZES, variable="energy")
    a2 = _cells(rng, len(e), 0.0, 1.0, 0.7, e)
    out = c.apply(a2, e)
    occ = (out > 0).mean(axis=0)
    assert np.abs(occ - 0.5).max() < 5 * np.sqrt(0.25 / len(e)) + 0.01
    assert np.abs((a2 > 0).mean() - 0.7) < 0.01  # the input was A's
    y = np.log(out[out > 0] / (0.01 * np.broadcast_to(e[:, None], out.shape)[out > 0]))
    levels = np.array([0.05, 0.25, 0.5, 0.75, 0.95])
    got, want = np.quantile(y, levels), 0.8 + 0.5 * norm.ppf(levels)
    se = 0.5 * np.sqrt(levels * (1 - levels) / len(y)) / norm.pdf(norm.ppf(levels))
    assert np.all(np.abs(got - want) < 5 * se + 0.01), (got, want)
    # the map is monotone per cell and energy: the order of one cell's values over showers is kept (zeros aside)
    j = 3
    nz = (out[:, j] > 0) & (e == 5.0)
    assert (np.diff(out[nz, j][np.argsort(a2[nz, j])]) >= 0).all()


def test_zeros_stay_zero_where_the_reference_is_filled_more_often():
    rng = np.random.default_rng(3)
    e = np.full(4000, 10.0)
    a, b = _cells(rng, len(e), 0.0, 1.0, 0.3, e), _cells(rng, len(e), 0.0, 1.0, 0.6, e)
    c = QuantileCorrection.fit(a, e, b, e, SIZES, variable="energy")
    a2 = _cells(rng, len(e), 0.0, 1.0, 0.3, e)
    out = c.apply(a2, e)
    assert ((out > 0) == (a2 > 0)).all()
    # the generated non-zero cells go to the upper half of B's non-zero distribution (u > 1 - 0.3 / 0.6)
    y = np.log(out[out > 0] / 0.1)
    assert abs(np.median(y) - 0.6745) < 0.06  # B's conditional median above its median: z(0.75)


def test_between_energy_nodes_the_map_is_interpolated():
    """Known answer: B is A shifted by 0 in ln(cell) at 10 GeV and by +1 at 100 GeV; at 31.6 GeV (the midpoint in
    ln E) the map shifts by 0.5; outside the nodes the nearest node's map is used."""
    rng = np.random.default_rng(4)
    e = np.repeat([10.0, 100.0], 3000)
    a = _cells(rng, len(e), 0.0, 1.0, 1.0, e)
    shift = np.where(e == 100.0, 1.0, 0.0)[:, None]
    b = (_cells(rng, len(e), 0.0, 1.0, 1.0, e) * np.exp(shift)).astype(np.float32)
    c = QuantileCorrection.fit(a, e, b, e, SIZES, variable="energy")
    for energy, want in [(np.sqrt(1000.0), 0.5), (10.0, 0.0), (100.0, 1.0), (300.0, 1.0), (3.0, 0.0)]:
        ee = np.full(3000, energy)
        a2 = _cells(rng, len(ee), 0.0, 1.0, 1.0, ee)
        got = np.median(np.log(c.apply(a2, ee) / a2))
        assert abs(got - want) < 0.06, (energy, got, want)


def test_eta_bins_are_used():
    """B is A shifted by +1 in ln(cell) at |eta| > 0.7 only: with two |eta| bins the map moves the forward cells
    and leaves the central ones; a correction fitted in |eta| bins needs each shower's eta."""
    rng = np.random.default_rng(5)
    n = 6000
    e = np.full(n, 20.0)
    eta = np.where(np.arange(n) % 2 == 0, 0.2, 1.2)
    a = _cells(rng, n, 0.0, 1.0, 1.0, e)
    b = (_cells(rng, n, 0.0, 1.0, 1.0, e) * np.exp((eta > 0.7)[:, None] * 1.0)).astype(np.float32)
    c = QuantileCorrection.fit(a, e, b, e, SIZES, variable="energy", gen_eta=eta, ref_eta=eta, eta_bins=2)
    a2 = _cells(rng, n, 0.0, 1.0, 1.0, e)
    d = np.log(c.apply(a2, e, eta) / a2)
    assert abs(np.median(d[eta < 0.7]) - 0.0) < 0.06 and abs(np.median(d[eta > 0.7]) - 1.0) < 0.06
    with pytest.raises(ConfigError, match="eta"):
        c.apply(a2, e)
    with pytest.raises(ConfigError, match="eta"):
        QuantileCorrection.fit(a, e, b, e, SIZES, variable="energy", eta_bins=2)


@pytest.mark.parametrize("variable", ["share", "energy_layers"])
def test_layer_renormalised_variants_keep_layer_energies(variable):
    rng = np.random.default_rng(6)
    e = np.repeat([3.0, 30.0, 300.0], 1500)
    a, b = _cells(rng, len(e), 0.0, 1.0, 0.7, e), _cells(rng, len(e), 0.5, 0.6, 0.4, e)
    c = QuantileCorrection.fit(a, e, b, e, SIZES, variable=variable)
    a2 = _cells(rng, len(e), 0.0, 1.0, 0.7, e)
    out = c.apply(a2, e)
    assert np.abs(out - a2).max() > 1e-3  # it did change the cells
    for sl in c.layer_slices:
        np.testing.assert_allclose(out[:, sl].sum(1), a2[:, sl].sum(1), rtol=1e-5)
    np.testing.assert_allclose(out.sum(1), a2.sum(1), rtol=1e-5)
    # the energy variant does not keep them (the known difference between the two)
    c_e = QuantileCorrection.fit(a, e, b, e, SIZES, variable="energy")
    assert np.abs(c_e.apply(a2, e).sum(1) / a2.sum(1) - 1).max() > 0.05


def _fitted(variable="share"):
    rng = np.random.default_rng(7)
    e = np.repeat([5.0, 50.0], 500)
    return QuantileCorrection.fit(_cells(rng, len(e), 0.0, 1.0, 0.7, e), e, _cells(rng, len(e), 0.3, 0.8, 0.5, e),
                                  e, SIZES, variable=variable, n_quantiles=20), e  # fmt: skip


def test_save_load_round_trip(tmp_path):
    c, e = _fitted()
    path = c.save(tmp_path / "m.qmap.npz")
    back = QuantileCorrection.load(path)
    x = _cells(np.random.default_rng(8), len(e), 0.0, 1.0, 0.7, e)
    np.testing.assert_array_equal(back.apply(x, e), c.apply(x, e))
    assert back.variable == "share" and back.layer_sizes == tuple(SIZES) and len(back.levels) == 20
    assert correction_path(tmp_path / "best-epoch=3.ckpt") == tmp_path / "best-epoch=3.qmap.npz"


def test_bad_files_give_one_config_error(tmp_path):
    c, _ = _fitted()
    good = c.save(tmp_path / "good.npz")
    meta = json.loads(str(np.load(good)["meta"]))
    q = np.load(good)["q_ref"].copy()
    q[0, 0, 0, 3] = q[0, 0, 0, 2] - 1.0
    p = np.load(good)["p_gen"].copy()
    p[0, 0, 0] = 1.5
    (tmp_path / "text.npz").write_text("not a zip file")
    with open(tmp_path / "pickled.npz", "wb") as fh:
        np.savez(fh, meta=np.array([{"a": 1}], dtype=object))
    cases = {
        tmp_path / "missing.npz": "not found",
        tmp_path / "text.npz": "not readable",
        tmp_path / "pickled.npz": "lacks",
        rewrite_npz(good, tmp_path / "noq.npz", q_gen=None): "lacks q_gen",
        rewrite_npz(good, tmp_path / "fmt.npz", meta=np.array(json.dumps({**meta, "format": "x"}))): "format",
        rewrite_npz(good, tmp_path / "var.npz", meta=np.array(json.dumps({**meta, "variable": "log"}))): "variable",
        rewrite_npz(good, tmp_path / "shape.npz", q_gen=q[:, :, :-1]): "shape",
        rewrite_npz(good, tmp_path / "order.npz", q_ref=q): "increase strictly",
        rewrite_npz(good, tmp_path / "occ.npz", p_gen=p): "occupancies",
        rewrite_npz(good, tmp_path / "nan.npz", levels=np.array([0.1, np.nan] + [0.9] * 18)): "levels",
        rewrite_npz(good, tmp_path / "json.npz", meta=np.array("{not json")): "not readable",
    }
    for path, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            QuantileCorrection.load(path)


def test_bad_arguments_give_one_config_error():
    c, e = _fitted()
    x = np.zeros((len(e), V), np.float32)
    with pytest.raises(ConfigError, match=r"\(N, 13\)"):
        c.apply(x[:, :-1], e)
    with pytest.raises(ConfigError, match="variable"):
        QuantileCorrection.fit(x, e, x, e, SIZES, variable="logit")
    with pytest.raises(ConfigError, match="n_quantiles"):
        QuantileCorrection.fit(x, e, x, e, SIZES, n_quantiles=1)
    with pytest.raises(ConfigError, match=">= 0"):
        QuantileCorrection.fit(-np.ones_like(x), e, x, e, SIZES)
    with pytest.raises(ConfigError, match="needs >= 20"):  # one shower at a third energy node
        QuantileCorrection.fit(x, e, np.concatenate([x, x[:1]]), np.concatenate([e, [500.0]]), SIZES)


def _training_file_unlike_the_generator(path, model, binning, np_seed: int, torch_seed: int) -> None:
    """A "detailed" training file of 200 showers at 5 and 50 GeV: the generator's own showers with every cell scaled
    by a log-normal (so its cell spectra differ from the generator's and a correction has something to do)."""
    from lhcml.data.calochallenge import write_showers

    rng = np.random.default_rng(np_seed)
    n = 200
    e = np.repeat([5.0, 50.0], n // 2)
    eta = rng.uniform(0.0, 1.3, n)
    with torch.no_grad():
        x = model.eval().generate(torch.as_tensor(e, dtype=torch.float32), torch.Generator().manual_seed(torch_seed),
                                  eta=torch.as_tensor(eta, dtype=torch.float32)).numpy()  # fmt: skip
    x = x * rng.lognormal(0.3, 0.2, x.shape).astype(np.float32)
    write_showers(path, e, x, binning, {}, eta=eta)


def test_fit_on_a_checkpoint_and_apply_in_the_harness(tmp_path, capsys):
    """``lhcml fastcalo quantile-map`` on a tiny checkpoint writes ``<ckpt>.qmap.npz`` beside it; the harness's
    ``generate_sample`` applies it (layer energies kept, cells changed) and without it gives the same showers as
    before; a correction for another sampler is refused, a bad file exits 2 without a traceback."""
    from lhcml import cli
    from lhcml.data.calochallenge import read_showers
    from lhcml.tasks.fastcalo.dataset import generate_sample
    from lhcml.train.fastcalo import load_generator, resample_checkpoint

    m, b, ckpt = real_binning_fm_checkpoint(tmp_path)
    _training_file_unlike_the_generator(tmp_path / "train.h5", m, b, 9, 3)
    with pytest.raises(SystemExit) as exc:
        cli.main(["fastcalo", "quantile-map", str(ckpt), str(tmp_path / "train.h5"), "--quantiles", "8"])
    assert exc.value.code in (0, None) and "wrote" in capsys.readouterr().out
    corr = QuantileCorrection.load(correction_path(ckpt))
    model, _ = load_generator(ckpt)
    corr.check_model(model)
    ref = read_showers(tmp_path / "train.h5", b)
    plain = generate_sample(model, ref, 7)
    np.testing.assert_array_equal(generate_sample(model, ref, 7, correction=None).showers, plain.showers)
    fixed = generate_sample(model, ref, 7, correction=corr)
    assert np.abs(fixed.showers - plain.showers).max() > 0
    for sl in b.layer_slices:
        np.testing.assert_allclose(fixed.showers[:, sl].sum(1), plain.showers[:, sl].sum(1), rtol=1e-5, atol=1e-9)
    other, _ = load_generator(resample_checkpoint(ckpt, tmp_path / "e2.ckpt", steps=2, solver="euler"))
    with pytest.raises(ConfigError, match="steps"):
        corr.check_model(other)
    (tmp_path / "bad.npz").write_text("x")
    with pytest.raises(SystemExit) as exc:
        cli.main(["fastcalo", "quantile-map", str(ckpt), str(tmp_path / "train.h5"), "--variable", "logit",
                  "-o", str(tmp_path / "x.npz")])  # fmt: skip
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "variable" in err and "Traceback" not in err


def test_generate_command_applies_the_correction_to_an_exported_model(tmp_path, capsys):
    """``lhcml fastcalo generate MODEL.onnx REF --quantile-correction FILE``: the written showers keep the layer
    energies of the uncorrected ones (share variant) but not their cells; a bad file exits 2 without a traceback."""
    from lhcml import cli
    from lhcml.data.calochallenge import read_showers
    from lhcml.export.fastcalo import export_generator

    m, b, ckpt = real_binning_fm_checkpoint(tmp_path)
    _training_file_unlike_the_generator(tmp_path / "train.h5", m, b, 10, 4)
    qmap = tmp_path / "m.qmap.npz"
    cli_args = ["fastcalo", "quantile-map", str(ckpt), str(tmp_path / "train.h5"), "--quantiles", "8", "-o", str(qmap)]
    with pytest.raises(SystemExit):
        cli.main(cli_args)
    onnx = tmp_path / "m.onnx"
    export_generator(m.eval(), onnx, binning_file_sha256=b.sha256, particle="photon", binning_xml=b.to_xml(),
                     timing=False, atol=1e-4)  # fmt: skip
    outs = {}
    for name, extra in [("plain", []), ("fixed", ["--quantile-correction", str(qmap)])]:
        with pytest.raises(SystemExit) as exc:
            cli.main(["fastcalo", "generate", str(onnx), str(tmp_path / "train.h5"), "-o", str(tmp_path / f"{name}.h5"),
                      *extra])  # fmt: skip
        assert exc.value.code in (0, None)
        outs[name] = read_showers(tmp_path / f"{name}.h5", b).showers
    assert np.abs(outs["fixed"] - outs["plain"]).max() > 0
    for sl in b.layer_slices:
        np.testing.assert_allclose(outs["fixed"][:, sl].sum(1), outs["plain"][:, sl].sum(1), rtol=1e-4, atol=1e-7)
    capsys.readouterr()
    (tmp_path / "bad.npz").write_text("x")
    with pytest.raises(SystemExit) as exc:
        cli.main(["fastcalo", "generate", str(onnx), str(tmp_path / "train.h5"), "-o", str(tmp_path / "bad.h5"),
                  "--quantile-correction", str(tmp_path / "bad.npz")])  # fmt: skip
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "not readable" in err and "Traceback" not in err and not (tmp_path / "bad.h5").exists()


@pytest.mark.parametrize("variable,eta_bins", [("energy_layers", 1), ("share", 2), ("energy", 1)])
def test_the_torch_module_computes_the_same_correction(variable, eta_bins):
    """The graph's version (float32 gathers and binary searches) gives apply's showers to float32 rounding, on the
    energy nodes and between them."""
    rng = np.random.default_rng(11)
    e = np.repeat([5.0, 50.0, 200.0], 800)
    eta = rng.uniform(0.0, 1.3, len(e))
    a, b = _cells(rng, len(e), 0.0, 1.0, 0.7, e), _cells(rng, len(e), 0.4, 0.7, 0.5, e)
    c = QuantileCorrection.fit(a, e, b, e, SIZES, variable=variable, gen_eta=eta, ref_eta=eta, eta_bins=eta_bins)
    m = c.torch_module()
    for ee in (e, np.exp(rng.uniform(np.log(2.0), np.log(260.0), len(e)))):
        x = _cells(rng, len(ee), 0.0, 1.0, 0.7, ee)
        want = c.apply(x, ee, eta)
        with torch.no_grad():
            got = m(torch.as_tensor(x), torch.as_tensor(ee, dtype=torch.float32), torch.as_tensor(eta, dtype=torch.float32))
        got = got.numpy()
        assert np.abs(want - x).max() > 1e-3 * ee.min()  # it corrects something
        assert ((got == 0) == (want == 0)).mean() > 0.9999
        assert np.abs(got - want).max() / ee.min() < 5e-4


def test_the_onnx_graph_with_the_correction(tmp_path, capsys):
    """``lhcml fastcalo quantile-map ... --onnx``: the exported graph (onnxruntime agreement with PyTorch asserted in
    the export) gives the corrected showers: apply() on the PyTorch sampler's showers for the same noise, to float32
    rounding; its metadata name the correction."""
    _, meta = corrected_onnx_matches_apply(tmp_path, capsys, [], data_seed=12, n=200)
    assert json.loads(meta["quantile_correction"])["variable"] == "energy_layers"
