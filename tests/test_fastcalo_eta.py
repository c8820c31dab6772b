"""The generator's η dependence (issue 15): showers over an |η| range, (E, |η|) conditioning, and
``--calo fast`` passing each photon's |η|.

* the layout: ``lhcml fastcalo simulate --eta-range`` stores each shower's |η| as the extra
  dataset ``incident_eta`` beside the CaloChallenge's two; files without it (the challenge's) read
  as before;
* the detailed calorimeter's depth in X0 grows as cosh η, so the strip fraction f1 grows with |η|
  (0.19 at |η| < 0.35, 0.54 at 1.05-1.37 on 4 000 photons, docs/benchmarks/fastcalo.md "Tenth
  version"): checked here on a few detailed photons, and a tiny flow-matching model conditioned on
  (E, |η|) learns such a dependence from synthetic showers (the untrained one cannot);
* a model conditioned on |η| refuses to run without it, an energy-only model refuses |η|, in
  PyTorch and in the exported ONNX graph, and a training config asking for η on files without it
  fails with one message;
* inside the simulation (:class:`lhcml.sim.fastcalo.FastCalo`) a photon at large |η| (either
  sign) gets a shower with more energy in the strips than one at small |η|, as in the detailed
  simulation, while an energy-only generator gives both the same.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _fastcalo_helpers import fit_cfm

from lhcml.errors import ConfigError
from lhcml.models.fastcalo.base import FastCaloGenerator
from lhcml.models.fastcalo.fm import CaloFlowMatching

LAYERS = [3, 8, 8, 2]
V = sum(LAYERS)


def eta_showers(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Synthetic showers at 10 GeV whose first-layer share grows with |η| as the detailed strips'
    (0.2 at η = 0 to 0.5 at 1.37: deeper in X0 at larger |η|); ``(E, showers, |η|)``."""
    rng = np.random.default_rng(seed)
    eta = rng.uniform(0.0, 1.37, n)
    f0 = 0.2 + 0.3 * eta / 1.37
    frac = np.stack([f0, 0.75 * (1 - f0), 0.2 * (1 - f0), 0.05 * (1 - f0)], 1)
    frac = np.stack([rng.dirichlet(200 * f) for f in frac])
    e = np.full(n, 10.0)
    showers = []
    for k, size in enumerate(LAYERS):
        profile = np.exp(-np.abs(np.arange(size) - (size - 1) / 2))
        lat = rng.dirichlet(20 * profile / profile.sum() * size, size=n)
        showers.append(lat * (0.95 * e * frac[:, k])[:, None])
    return (torch.from_numpy(e.astype(np.float32)), torch.from_numpy(np.concatenate(showers, 1).astype(np.float32)),
            torch.from_numpy(eta.astype(np.float32)))  # fmt: skip


def small_fm_eta() -> CaloFlowMatching:
    torch.manual_seed(2)
    return CaloFlowMatching(V, LAYERS, 1.0, 200.0, hidden=128, depth=3, steps=8, voxel_space="log",
                            threshold_kev=1000.0, eta_range=(0.0, 1.37))  # fmt: skip


def first_layer_share(model: CaloFlowMatching, eta0: float, n: int = 1000, seed: int = 5) -> float:
    g = torch.Generator().manual_seed(seed)
    x = model.generate(torch.full((n,), 10.0), generator=g, eta=torch.full((n,), eta0))
    lay = model.layer_energies(x)
    return float((lay[:, 0] / lay.sum(1)).mean())


@pytest.fixture(scope="module")
def fm_eta_pair():
    torch.set_num_threads(1)
    e, x, eta = eta_showers(4000, 11)
    untrained = small_fm_eta()
    untrained.prepare(e, x)
    untrained.eval()
    model = small_fm_eta()
    model.prepare(e, x)
    fit_cfm(model, e, x, eta, 500)
    model.eval()
    return untrained, model


def test_eta_round_trip_in_the_calochallenge_layout(tmp_path):
    import h5py

    from lhcml.data.calochallenge import (
        ETA_KEY,
        Binning,
        LayerBinning,
        read_showers,
        write_binning,
        write_showers,
    )

    b = write_binning(Binning("photon", 22, (LayerBinning(id=1, kind="cells", name="l0", n_eta=3, n_phi=1,
                                                          deta=0.025, dphi=0.0245),)), tmp_path / "b.xml")  # fmt: skip
    e = np.array([1.0, 10.0, 100.0])
    x = np.arange(9, dtype=np.float32).reshape(3, 3)
    write_showers(tmp_path / "eta.h5", e, x, b, eta=np.array([0.3, -1.2, 0.0]))
    s = read_showers(tmp_path / "eta.h5", b)
    np.testing.assert_allclose(s.eta, [0.3, 1.2, 0.0])  # |eta|: showers at eta < 0 are mirrored
    np.testing.assert_allclose(s.subset(np.array([2, 0])).eta, [0.0, 0.3])
    with h5py.File(tmp_path / "eta.h5") as f:  # the challenge's two datasets are untouched
        assert set(f) == {"incident_energies", "showers", ETA_KEY}
        assert f["incident_energies"].shape == (3, 1) and f["showers"].shape == (3, 3)
    write_showers(tmp_path / "plain.h5", e, x, b)  # a CaloChallenge file: no incident_eta
    assert read_showers(tmp_path / "plain.h5", b).eta is None
    with pytest.raises(ConfigError, match="eta values for 3 showers"):
        write_showers(tmp_path / "bad.h5", e, x, b, eta=np.zeros(2))
    with h5py.File(tmp_path / "plain.h5", "a") as f:
        f.create_dataset(ETA_KEY, data=np.full((2, 1), 0.1))
    with pytest.raises(ConfigError, match="one \\|eta\\| >= 0 per shower"):
        read_showers(tmp_path / "plain.h5", b)


def test_simulate_eta_range_stores_eta_and_the_detailed_f1_grows_with_eta(tmp_path, capsys):
    from lhcml.cli import main
    from lhcml.data.calochallenge import read_showers
    from lhcml.sim.fastcalo import (
        ETA_RANGE,
        detailed_showers,
        parse_run_name,
        run_name,
        voxel_binning,
    )

    main_args = ["fastcalo", "simulate", str(tmp_path / "s"), "-n", "12", "--energies", "20", "--eta-range", "0.9,1.2",
                 "--showers-per-shard", "12", "--quiet"]  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        main(main_args)
    assert exc.value.code in (0, None)
    s = read_showers(tmp_path / "s" / "photon_20.h5", tmp_path / "s" / "binning_photon.xml")
    assert len(s) == 12 and s.eta is not None and np.all((s.eta >= 0.9) & (s.eta < 1.2))
    assert (float(s.attrs["eta_min"]), float(s.attrs["eta_max"])) == (0.9, 1.2)
    assert (tmp_path / "s" / "shards" / "fastcalo-photon-20-eta0.9_1.2").is_dir()
    assert parse_run_name(run_name("photon", "discrete", (0.0, 1.37))) == ("photon", "discrete", (0.0, 1.37))
    assert run_name("photon", "discrete") == "fastcalo-photon-discrete"  # the default slice: as before
    # bad ranges: one message, exit code 2, no file
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([*main_args[:2], str(tmp_path / "bad"), "-n", "4", "--eta-range", "1.2,1.6", "--quiet"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "0 <= lo < hi <= 1.37" in err and "Traceback" not in err
    assert not list((tmp_path / "bad").rglob("*.h5"))
    # the detailed calorimeter: strips deeper in X0 at larger |eta| -> larger strip fraction
    b = voxel_binning("photon", eta_range=ETA_RANGE)
    small = detailed_showers("photon", np.full(40, 20.0), 1, eta_range=(0.1, 0.2), binning=b, images=False)
    large = detailed_showers("photon", np.full(40, 20.0), 1, eta_range=(1.1, 1.2), binning=b, images=False)
    n0 = b.layers[0].n_voxels
    f_small = (small["showers"][:, :n0].sum(1) / small["showers"].sum(1)).mean()
    f_large = (large["showers"][:, :n0].sum(1) / large["showers"].sum(1)).mean()
    np.testing.assert_allclose(small["incident_eta"][:, 0], np.abs(small["truth"]["eta"]), rtol=1e-6)
    assert f_large > f_small + 0.15, (f_small, f_large)


def test_fm_conditioned_on_eta_learns_the_eta_dependence(fm_eta_pair):
    untrained, model = fm_eta_pair
    data_low, data_high = 0.2 + 0.3 * 0.1 / 1.37, 0.2 + 0.3 * 1.2 / 1.37  # the synthetic first-layer shares
    low, high = first_layer_share(model, 0.1), first_layer_share(model, 1.2)
    # the trained model follows |eta|: each share within 0.04 of the data's (they differ by 0.24)
    assert abs(low - data_low) < 0.04 and abs(high - data_high) < 0.04, (low, high)
    u_low, u_high = first_layer_share(untrained, 0.1), first_layer_share(untrained, 1.2)
    assert abs(u_high - u_low) < (high - low) / 2, (u_low, u_high, low, high)
    # and |eta| is what it uses: -1.2 gives the shower of +1.2 (showers at eta < 0 are mirrored)
    g = torch.Generator().manual_seed(3)
    noise = model.draw_noise(50, g)
    e = torch.full((50,), 10.0)
    with torch.no_grad():
        torch.testing.assert_close(model.sample(e, noise, torch.full((50,), -1.2)),
                                   model.sample(e, noise, torch.full((50,), 1.2)))  # fmt: skip


def test_conditioning_errors(fm_eta_pair, tmp_path):
    import onnxruntime  # noqa: F401 - the graph check below needs it

    from lhcml.export.fastcalo import export_generator
    from lhcml.sim.fastcalo import OnnxShowerModel, voxel_binning

    _, model = fm_eta_pair
    e = torch.full((4,), 10.0)
    with pytest.raises(ConfigError, match="conditioned on \\(E, \\|eta\\|\\).*give each shower's eta"):
        model.generate(e)
    with pytest.raises(ConfigError, match="outside the trained range 0-1.37"):
        model.generate(e, eta=torch.full((4,), 1.6))
    plain = CaloFlowMatching(V, LAYERS, 1.0, 200.0, hidden=16, depth=1, steps=2)
    plain.prepare(*eta_showers(64, 1)[:2])
    plain.eval()
    with pytest.raises(ConfigError, match="conditioned on the energy only"):
        plain.generate(e, eta=torch.full((4,), 0.5))
    with pytest.raises(ConfigError, match="eta_range must be"):
        CaloFlowMatching(V, LAYERS, 1.0, 200.0, eta_range=(0.5,))
    # the exported graphs: 'eta' is an input of the conditioned one only, and each refuses the other use
    b = voxel_binning("photon")
    for name, m in (("eta", model), ("plain", plain)):
        big = CaloFlowMatching(b.n_voxels, b.layer_sizes, 1.0, 260.0, hidden=16, depth=1, steps=2,
                               eta_range=m.eta_range)  # fmt: skip
        big.prepare(torch.full((8,), 10.0), torch.rand(8, b.n_voxels) * (10.0 / b.n_voxels))
        export_generator(big.eval(), tmp_path / f"{name}.onnx", binning_file_sha256=b.sha256, particle="photon",
                         binning_xml=b.to_xml(), timing=False, n_check=8, atol=1e-4)  # fmt: skip
    onnx_eta, onnx_plain = OnnxShowerModel(str(tmp_path / "eta.onnx")), OnnxShowerModel(str(tmp_path / "plain.onnx"))
    assert onnx_eta.eta_range == (0.0, 1.37) and onnx_plain.eta_range is None
    rng = np.random.default_rng(0)
    assert onnx_eta.generate(np.array([10.0, 50.0]), rng, eta=np.array([0.2, -1.3])).shape == (2, b.n_voxels)
    with pytest.raises(ConfigError, match="conditioned on \\(E, \\|eta\\|\\): pass each particle's eta"):
        onnx_eta.generate(np.array([10.0]), rng)
    with pytest.raises(ConfigError, match="energy only"):
        onnx_plain.generate(np.array([10.0]), rng, eta=np.array([0.2]))
    with pytest.raises(ConfigError, match="\\|eta\\| 0-1.37"):
        onnx_eta.generate(np.array([10.0]), rng, eta=np.array([1.5]))
    # lhcml fastcalo generate: the reference's |eta| goes to the graph and into the output file
    from lhcml.data.calochallenge import read_showers, write_showers
    from lhcml.tasks.fastcalo.dataset import generate_like

    bb = onnx_eta.binning
    write_showers(tmp_path / "ref.h5", np.array([5.0, 50.0]), np.zeros((2, bb.n_voxels)), bb, eta=np.array([0.1, 1.3]))
    generate_like(tmp_path / "eta.onnx", tmp_path / "ref.h5", tmp_path / "gen.h5")
    np.testing.assert_allclose(read_showers(tmp_path / "gen.h5", bb).eta, [0.1, 1.3])
    write_showers(tmp_path / "ref_plain.h5", np.array([5.0]), np.zeros((1, bb.n_voxels)), bb)
    with pytest.raises(ConfigError, match="neither incident_eta nor eta_min/eta_max"):
        generate_like(tmp_path / "eta.onnx", tmp_path / "ref_plain.h5", tmp_path / "gen2.h5")


def test_training_config_asking_for_eta_on_files_without_it(tmp_path):
    from lhcml.data.calochallenge import Binning, LayerBinning, write_binning, write_showers
    from lhcml.train.protocol import load_trainable_config

    shapes = ((3, 1), (2, 4), (2, 4), (2, 1))
    layers = tuple(LayerBinning(id=k + 1, kind="cells", name=f"l{k}", n_eta=ne, n_phi=nphi, deta=0.025,
                                dphi=0.0245) for k, (ne, nphi) in enumerate(shapes))  # fmt: skip
    b = write_binning(Binning("photon", 22, layers), tmp_path / "b.xml")
    e, x, _ = eta_showers(64, 3)
    write_showers(tmp_path / "t.h5", e.numpy(), x.numpy(), b)  # no incident_eta
    trainer, cfg = load_trainable_config("configs/fastcalo/fm_strips_eta.yaml", [
        f"data.train_files=[{tmp_path / 't.h5'}]", f"data.val_files=[{tmp_path / 't.h5'}]",
        f"data.binning={tmp_path / 'b.xml'}", f"output_dir={tmp_path / 'run'}", "trainer.max_epochs=1",
        "model.align_n_phi=1", "model.align_max_shift=1", "model.hidden=8"])  # fmt: skip
    with pytest.raises(ConfigError, match="carry no incident_eta.*--eta-range"):
        trainer.fit(cfg)


class _TemplateByEta(FastCaloGenerator):
    """A constructed generator: E x the mean voxel fractions of detailed photons at small |η|
    (0.1-0.2) or large |η| (1.1-1.2), chosen by the |η| it is given (``eta_range``), or always
    the small-|η| template (energy only)."""

    registry_name = "template_by_eta"

    def __init__(self, layer_sizes, small: np.ndarray, large: np.ndarray, eta_range=None) -> None:
        super().__init__(int(sum(layer_sizes)), layer_sizes, 1.0, 260.0, eta_range=eta_range)
        self.noise_dim = 1
        self.register_buffer("small", torch.from_numpy(small.astype(np.float32)))
        self.register_buffer("large", torch.from_numpy(large.astype(np.float32)))

    def sample(self, energy_gev, noise, eta=None):
        w = torch.zeros_like(energy_gev) if eta is None else (eta.abs() > 0.65).float()
        t = (1 - w)[:, None] * self.small + w[:, None] * self.large
        return energy_gev.reshape(-1, 1) * t * torch.exp(0.01 * noise[:, :1])

    def loss_terms(self, energy_gev, showers, phase):  # pragma: no cover - never trained
        return {}


def test_calo_fast_passes_each_photons_eta(tmp_path):
    """FastCalo.deposit: photons at |eta| 0.15 and 1.15 (both signs) through an exported
    eta-conditioned generator get showers with the strip fraction of the detailed simulation at
    their own |eta|: larger at large |eta|; an energy-only generator gives both the same."""
    from lhcml.export.fastcalo import export_generator
    from lhcml.sim.calo_geometry import load_geometry
    from lhcml.sim.fastcalo import ETA_RANGE, FastCalo, detailed_showers, voxel_binning

    b = voxel_binning("photon", eta_range=ETA_RANGE)
    geo = load_geometry()
    tmpl = {}
    for name, rng_eta in (("small", (0.1, 0.2)), ("large", (1.1, 1.2))):
        d = detailed_showers("photon", np.full(40, 50.0), 2, eta_range=rng_eta, binning=b, images=False)
        tmpl[name] = (d["showers"] / d["incident_energies"]).mean(0)
    for name, eta_range in (("eta", (0.0, 1.37)), ("plain", None)):
        m = _TemplateByEta(b.layer_sizes, tmpl["small"], tmpl["large"], eta_range).eval()
        export_generator(m, tmp_path / f"{name}.onnx", binning_file_sha256=b.sha256, particle="photon",
                         binning_xml=b.to_xml(), timing=False, n_check=8)  # fmt: skip
    eta = np.array([0.15, -0.15, 1.15, -1.15])
    pt = 50.0 / np.cosh(eta)
    phi = np.array([0.3, 1.3, 2.3, -2.0])
    p = {"pid": np.full(4, 22), "e": np.full(4, 50.0), "px": pt * np.cos(phi), "py": pt * np.sin(phi),
         "pz": pt * np.sinh(eta), "charge": np.zeros(4), "vx": np.zeros(4), "vy": np.zeros(4), "vz": np.zeros(4)}  # fmt: skip
    f1 = {}
    for name in ("eta", "plain"):
        fast = FastCalo.from_option(f"fast:{tmp_path / name}.onnx")
        assert fast.select(p).all()
        grids = {lay.name: np.zeros((4, lay.n_eta, lay.n_phi), np.float32) for lay in geo.readout_layers}
        fast.deposit(p, np.arange(4), grids, geo, np.random.default_rng(0))
        tot = sum(g.reshape(4, -1).sum(1) for g in grids.values())
        f1[name] = grids["strips"].reshape(4, -1).sum(1) / tot
    detailed = (tmpl["small"][: b.layers[0].n_voxels].sum() / tmpl["small"].sum(),
                tmpl["large"][: b.layers[0].n_voxels].sum() / tmpl["large"].sum())
    assert detailed[1] > detailed[0] + 0.15, detailed
    # eta-conditioned: each photon's strip fraction is the detailed one at its |eta| (either sign)
    np.testing.assert_allclose(f1["eta"], [detailed[0]] * 2 + [detailed[1]] * 2, atol=0.02)
    # energy only: the same (small-|eta|) fraction everywhere, the missing eta dependence
    np.testing.assert_allclose(f1["plain"], [detailed[0]] * 4, atol=0.02)
