"""The spot readout of generated showers (lhcml.tasks.fastcalo.readout, issue 15)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import gammainc

from lhcml.errors import ConfigError, SchemaError
from lhcml.tasks.fastcalo.readout import SpotReadout


def test_the_threshold_is_the_detailed_simulations_spot_quantile():
    """From calo_geometry.yaml: 60 spots per GeV (16.7 MeV each), a = 0.10 -> Gamma shape 5/3; 5 % of
    single spots below 2.31 MeV; and the detailed simulation's own EM spots agree (Monte Carlo)."""
    from lhcml.sim.calo_geometry import load_geometry
    from lhcml.sim.showers import em_spots

    r = SpotReadout.from_geometry(fraction=0.05)
    assert r.spot_gev == pytest.approx(1 / 60)
    assert r.shape == pytest.approx(5 / 3)
    assert r.threshold_gev == pytest.approx(2.306e-3, rel=1e-3)
    assert gammainc(r.shape, r.threshold_gev * r.shape / r.spot_gev) == pytest.approx(0.05, rel=1e-9)
    assert SpotReadout.from_geometry(fraction=0.01).threshold_gev < r.threshold_gev
    geo = load_geometry()
    n = 400  # 10 GeV photons: 600 spots each
    axis = np.zeros((n, len(geo.layers)))
    spots = em_spots(np.full(n, 10.0), np.arange(n), axis, axis, np.ones(n), geo, np.random.default_rng(1))
    e_mev = spots.energy
    assert e_mev.mean() == pytest.approx(1e3 * r.spot_gev, rel=0.01)
    below = (e_mev < 1e3 * r.threshold_gev).mean()
    assert below == pytest.approx(0.05, abs=0.003)  # 240 000 spots: binomial error 0.0004


def test_cells_above_the_threshold_are_untouched_and_layers_keep_their_energy():
    r = SpotReadout.from_geometry()
    slices = (slice(0, 4), slice(4, 10))
    rng = np.random.default_rng(0)
    big = rng.uniform(0.005, 2.0, (50, 10)).astype(np.float32)  # every cell >= 5 MeV
    big[:, 7] = 0.0  # empty cells stay empty
    out = r.apply(big, slices, np.random.default_rng(1))
    assert out.dtype == big.dtype
    np.testing.assert_array_equal(out, big)
    # cells of 1-2 MeV beside a 1 GeV core: each layer keeps its energy exactly
    x = np.zeros((2000, 10))
    x[:, 0] = 1.0
    x[:, 5] = 0.5
    x[:, 1:4] = rng.uniform(1e-3, 2e-3, (2000, 3))
    x[:, 6:10] = rng.uniform(1e-3, 2e-3, (2000, 4))
    out = r.apply(x, slices, np.random.default_rng(2))
    for sl in slices:
        np.testing.assert_allclose(out[:, sl].sum(1), x[:, sl].sum(1), rtol=1e-12)
    assert set(np.unique(out[:, 1:4] > 0)) == {False, True}


def test_small_cells_become_whole_spots_and_keep_their_energy_in_expectation():
    """A known answer: a cell of e < threshold is one spot with probability e / E_spot, so over many
    showers the hit rate is e / E_spot, the kept cells have the spot distribution's mean, and the
    energy of those cells is conserved on average (before the layer rescaling)."""
    r = SpotReadout.from_geometry()
    n, e = 200_000, 1.5e-3
    x = np.zeros((n, 2))
    x[:, 0] = e
    x[:, 1] = 1.0  # a big cell in another layer: its layer is rescaled on its own
    out = r.apply(x, (slice(0, 1), slice(1, 2)), np.random.default_rng(3))
    # a layer of one small cell: rescaled back to e when kept, left as generated when emptied
    np.testing.assert_allclose(out[:, 0], e)
    # beside a 10 GeV cell of the same layer (the rescaling then moves energies by < 0.2 %)
    x2 = np.stack([np.full(n, e), np.full(n, 10.0)], 1)
    y = r.apply(x2, (slice(0, 2),), np.random.default_rng(4))
    np.testing.assert_allclose(y.sum(1), x2.sum(1), rtol=1e-12)
    small = y[:, 0]
    rate = (small > 0).mean()
    assert rate == pytest.approx(e / r.spot_gev, abs=4 * np.sqrt(rate / n))
    assert small[small > 0].mean() == pytest.approx(r.spot_gev, rel=0.03)
    # the energy of the small cells is kept on average (spread of the mean: sqrt(rate n) spots)
    assert small.mean() == pytest.approx(e, rel=4 * 1.3 / np.sqrt(rate * n))


def test_detailed_showers_pass_nearly_unchanged():
    """The detailed simulation's own showers: layer energies kept exactly, under 5 % of the hit
    cells (those under the threshold) re-read."""
    from lhcml.sim.fastcalo import detailed_showers, voxel_binning

    b = voxel_binning("photon")
    d = detailed_showers("photon", np.full(100, 20.0), 5, binning=b, images=False)["showers"] / 1e3  # GeV
    r = SpotReadout.from_geometry()
    out = r.apply(d, b.layer_slices, np.random.default_rng(6))
    for sl in b.layer_slices:
        np.testing.assert_allclose(out[:, sl].sum(1), d[:, sl].sum(1), rtol=1e-5)
    changed = ((out > 0) != (d > 0)).sum() / (d > 0).sum()
    assert 0 < changed < 0.05
    hits_before, hits_after = (d > 0).sum(), (out > 0).sum()
    assert hits_after <= hits_before


def test_generated_excess_cells_are_removed_where_a_hard_threshold_would_also_drop_their_energy():
    """A generated-like layer: a 1 GeV core plus 20 cells of 1.2 MeV (the leaked 'empty' mode): the
    readout leaves about 20 x 1.2 / 16.7 = 1.4 hit cells of them on average, and the energy at their
    positions is kept on average."""
    r = SpotReadout.from_geometry()
    n = 5000
    x = np.zeros((n, 21))
    x[:, 0] = 1.0
    x[:, 1:] = 1.2e-3
    out = r.apply(x, (slice(0, 21),), np.random.default_rng(7))
    hits = (out[:, 1:] > 0).sum(1).mean()
    assert hits == pytest.approx(20 * 1.2e-3 / r.spot_gev, rel=0.05)
    halo = out[:, 1:].sum(1).mean()
    assert halo == pytest.approx(20 * 1.2e-3, rel=0.05)
    np.testing.assert_allclose(out.sum(1), x.sum(1), rtol=1e-12)


def test_bad_values_give_one_clear_message():
    with pytest.raises(ConfigError, match="fraction must be in"):
        SpotReadout.from_geometry(fraction=1.5)
    with pytest.raises(ConfigError, match="fraction must be in"):
        SpotReadout.from_geometry(fraction=0.0)
    with pytest.raises(ConfigError, match="threshold < spot energy"):
        SpotReadout(spot_gev=0.01, shape=1.0, threshold_gev=0.02)
    r = SpotReadout.from_geometry()
    with pytest.raises(SchemaError, match="do not match the layers"):
        r.apply(np.zeros((3, 5)), (slice(0, 4),), np.random.default_rng(0))


def _fixed_onnx(path, binning, template):
    """An exported-generator stand-in: showers = E_inc x ``template`` (the noise input is unused)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    v = binning.n_voxels
    graph = helper.make_graph(
        [helper.make_node("Mul", ["incident_energy", "template"], ["showers"])], "fixed_generator",
        [helper.make_tensor_value_info("incident_energy", TensorProto.FLOAT, ["N", 1]),
         helper.make_tensor_value_info("noise", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("showers", TensorProto.FLOAT, ["N", v])],
        initializer=[numpy_helper.from_array(template.astype(np.float32)[None, :], "template")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    meta = {"model_name": "fixed", "noise_dim": "2", "n_voxels": str(v), "e_min_gev": "1.0", "e_max_gev": "260.0",
            "particle": "photon", "binning_sha256": binning.sha256, "binning_xml": binning.to_xml()}  # fmt: skip
    for k, val in meta.items():
        model.metadata_props.add(key=k, value=val)
    onnx.save(model, str(path))


def test_lhcml_fastcalo_generate_spot_readout(tmp_path, capsys):
    """`lhcml fastcalo generate --spot-readout 0.05`: each layer's energy as without it, the cells of
    1 MeV per GeV (under 2.3 MeV at 1-2 GeV) mostly emptied; a fraction outside (0, 1) exits 2."""
    from lhcml.cli import main
    from lhcml.data.calochallenge import parse_binning, read_showers, write_showers
    from lhcml.sim.fastcalo import voxel_binning

    b = parse_binning(voxel_binning("photon").to_xml())
    template = np.zeros(b.n_voxels)
    for sl in b.layer_slices:
        template[sl] = 1e-3  # 1 MeV per GeV in every cell
        template[sl.start] = 0.2  # a core
    _fixed_onnx(tmp_path / "fixed.onnx", b, template)
    e = np.repeat([1.0, 2.0], 500)
    write_showers(tmp_path / "ref.h5", e, np.zeros((len(e), b.n_voxels)), b)
    common = ["fastcalo", "generate", str(tmp_path / "fixed.onnx"), str(tmp_path / "ref.h5"), "--seed", "3"]
    for name, extra in (("raw", []), ("spot", ["--spot-readout", "0.05"])):
        with pytest.raises(SystemExit) as exc:
            main([*common, "-o", str(tmp_path / f"{name}.h5"), *extra])
        assert exc.value.code in (0, None)
    raw, spot = (read_showers(tmp_path / f"{n}.h5", b).showers for n in ("raw", "spot"))
    for sl in b.layer_slices:
        np.testing.assert_allclose(spot[:, sl].sum(1), raw[:, sl].sum(1), rtol=1e-5)
    small = np.ones(b.n_voxels, bool)
    small[[sl.start for sl in b.layer_slices]] = False
    hit_raw, hit_spot = (raw[:, small] > 0).mean(), (spot[:, small] > 0).mean()
    assert hit_raw == 1.0
    # a cell of e = 1 or 2 MeV stays hit with probability e / 16.7 MeV: 0.09 on average
    assert hit_spot == pytest.approx(1.5e-3 * 60, abs=0.01)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([*common, "-o", str(tmp_path / "bad.h5"), "--spot-readout", "1.5"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "fraction must be in (0, 1)" in err and "Traceback" not in err
    assert not (tmp_path / "bad.h5").exists()


def test_generate_sample_with_the_readout_keeps_the_layers_of_the_same_showers():
    """generate_sample(readout=...): the same generated showers (same seed), each layer's energy
    unchanged, no more hit cells, none left in (0, threshold) except those rescaled into it."""
    import torch

    from lhcml.data.calochallenge import CaloSample
    from lhcml.models.fastcalo.fm import CaloFlowMatching
    from lhcml.sim.fastcalo import voxel_binning
    from lhcml.tasks.fastcalo.dataset import generate_sample

    b = voxel_binning("photon")
    torch.manual_seed(0)
    m = CaloFlowMatching(b.n_voxels, b.layer_sizes, 1.0, 260.0, hidden=16, depth=1, steps=2, voxel_space="log",
                         threshold_kev=1000.0)  # fmt: skip
    m.prepare(torch.full((64,), 10.0), torch.rand(64, b.n_voxels) * (10.0 / b.n_voxels))
    ref = CaloSample(energies=np.full(300, 5.0), showers=np.zeros((300, b.n_voxels), np.float32), binning=b)
    r = SpotReadout.from_geometry()
    with torch.no_grad():
        raw = generate_sample(m.eval(), ref, 4).showers
        spot = generate_sample(m.eval(), ref, 4, readout=r).showers
    for sl in b.layer_slices:
        np.testing.assert_allclose(spot[:, sl].sum(1), raw[:, sl].sum(1), rtol=1e-5)
    assert (spot > 0).sum() <= (raw > 0).sum()
    was_low = (raw > 0) & (raw < r.threshold_gev)
    assert was_low.any() and (spot[was_low] == 0).mean() > 0.8
