"""The generator told where inside its φ cell a photon hits (``model.phi_cells``, issue 15,
docs/benchmarks/fastcalo.md "Twelfth version").

* ``lhcml fastcalo simulate`` stores each shower's φ (``incident_phi``); the CaloChallenge layout
  round trip keeps it and files without it (the challenge's own) read ``phi = None``;
* a tiny flow-matching model given the φ phase (``phi_cells``: sin/cos of ``n φ`` for a cell
  width ``2 pi / n``) learns a φ centroid that follows it; the same model without it does not;
* bad ``phi_cells`` give one clear message (``lhcml train`` exits 2), and so does a config asking
  for φ on files without ``incident_phi``; a model told φ refuses to run without it and vice versa;
* the exported ONNX graph takes a ``phi`` input (onnxruntime agreement asserted by the export),
  its showers move with the phase and not with whole cells;
* inside the simulation (:class:`lhcml.sim.fastcalo.FastCalo`) each photon's own φ reaches the
  generator.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _fastcalo_helpers import fit_cfm, tiny_fm_overrides, two_cell_showers

from lhcml.errors import ConfigError
from lhcml.models.fastcalo.base import FastCaloGenerator
from lhcml.models.fastcalo.fm import CaloFlowMatching

LAYERS = [4, 6]
V = sum(LAYERS)
N_PHI = 256
W_PHI = 2 * math.pi / N_PHI


def phi_showers(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Synthetic 10 GeV showers whose first layer (4 cells in φ) shares the energy between its
    two central cells as the impact position inside a φ cell of width 2 pi / 256 says (phase 0 all
    in cell 1, phase 1 all in cell 2); ``(E, showers, |η|, φ)``, φ uniform in -π..π."""
    rng = np.random.default_rng(seed)
    eta = rng.uniform(0.2, 0.3, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    x = two_cell_showers(rng, (phi / W_PHI) % 1.0)
    f32 = lambda a: torch.from_numpy(np.asarray(a, np.float32))  # noqa: E731
    return torch.full((n,), 10.0), x, f32(eta), f32(phi)


def small_fm(phi_cells: list[float] | None) -> CaloFlowMatching:
    torch.manual_seed(3)
    return CaloFlowMatching(V, LAYERS, 1.0, 100.0, hidden=96, depth=2, steps=6, voxel_space="log",
                            threshold_kev=1000.0, eta_range=(0.0, 1.37), eta_cells=[0.025],
                            phi_cells=phi_cells)  # fmt: skip


def centroid_phase_correlation(model: CaloFlowMatching, n: int = 600) -> float:
    e, _, eta, phi = phi_showers(n, 99)
    with torch.no_grad():
        x = model.generate(e, generator=torch.Generator().manual_seed(1), eta=eta,
                           phi=phi if model.conditions_on_phi else None).numpy()  # fmt: skip
    first = x[:, :4]
    centroid = (first * np.arange(4)).sum(1) / np.clip(first.sum(1), 1e-9, None)
    return float(np.corrcoef(centroid, (phi.numpy() / W_PHI) % 1.0)[0, 1])


def test_the_phi_phase_condition_learns_where_the_shower_sits():
    torch.set_num_threads(1)
    e, x, eta, phi = phi_showers(3000, 11)
    first = x.numpy()[:, :4]
    truth = float(np.corrcoef((first * np.arange(4)).sum(1) / first.sum(1), (phi.numpy() / W_PHI) % 1.0)[0, 1])
    assert truth > 0.95
    corr = {}
    for name, cells in (("phi cells", [W_PHI]), ("eta cells only", None)):
        model = small_fm(cells)
        model.prepare(e, x)
        fit_cfm(model, e, x, eta, 350, phi=phi if cells else None)
        corr[name] = centroid_phase_correlation(model.eval())
    # told the phase, the model puts the shower where the phi cell position says; without it (as
    # every model before, trained on files without incident_phi) the same training cannot
    assert corr["phi cells"] > 0.6, corr
    assert abs(corr["eta cells only"]) < 0.3, corr  # measured 0.81 and 0.04 (synthetic truth 1.00)


def test_bad_phi_cells_and_missing_phi_give_one_clear_message():
    with pytest.raises(ConfigError, match="phi_cells = widths 2 pi / n"):
        CaloFlowMatching(V, LAYERS, 1.0, 100.0, phi_cells=[0.0245])  # 2 pi / 0.0245 = 256.46 cells
    with pytest.raises(ConfigError, match="phi_cells = widths 2 pi / n"):
        CaloFlowMatching(V, LAYERS, 1.0, 100.0, phi_cells=[-W_PHI])
    with pytest.raises(ConfigError, match="phi_cells must be a list of phi cell widths"):
        CaloFlowMatching(V, LAYERS, 1.0, 100.0, phi_cells=["middle"])
    with pytest.raises(ConfigError, match="phi_cells is empty"):
        CaloFlowMatching(V, LAYERS, 1.0, 100.0, phi_cells=[])
    m = CaloFlowMatching(V, LAYERS, 1.0, 100.0, hidden=8, depth=1, steps=1, phi_cells=[W_PHI, 4 * W_PHI])
    assert m.phi_cells == (256, 64) and m.cond_dim == 1 + 4 and m.conditions_on_phi
    e, x, _, phi = phi_showers(16, 1)
    m.prepare(e, x)
    with pytest.raises(ConfigError, match="give each shower's phi"):
        m.generate(e)
    assert m.generate(e, phi=phi).shape == (16, V)
    plain = CaloFlowMatching(V, LAYERS, 1.0, 100.0, hidden=8, depth=1, steps=1)
    plain.prepare(e, x)
    with pytest.raises(ConfigError, match="no model.phi_cells: do not pass phi"):
        plain.generate(e, phi=phi)


def _write_sample(tmp_path: Path, with_phi: bool = True) -> Path:
    from lhcml.data.calochallenge import Binning, LayerBinning, write_binning, write_showers

    layers = (LayerBinning(id=1, kind="cells", name="l0", n_eta=1, n_phi=4, deta=0.025, dphi=W_PHI),
              LayerBinning(id=2, kind="cells", name="l1", n_eta=2, n_phi=3, deta=0.025, dphi=W_PHI))  # fmt: skip
    b = write_binning(Binning("photon", 22, layers), tmp_path / "b.xml")
    e, x, eta, phi = phi_showers(96, 5)
    write_showers(tmp_path / "t.h5", e.numpy(), x.numpy(), b, eta=eta.numpy(), phi=phi.numpy() if with_phi else None)
    return tmp_path


def test_calochallenge_round_trip_keeps_incident_phi(tmp_path):
    from lhcml.data.calochallenge import read_showers

    d = _write_sample(tmp_path)
    s = read_showers(d / "t.h5", d / "b.xml")
    _, _, eta, phi = phi_showers(96, 5)
    np.testing.assert_allclose(s.phi, phi.numpy(), rtol=0, atol=1e-6)  # signed: phi is not mirrored
    np.testing.assert_allclose(s.eta, eta.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(s.subset(slice(3, 5)).phi, s.phi[3:5])
    # files without it (the CaloChallenge's own, lhcml's before incident_phi) read phi = None
    old = tmp_path / "old"
    old.mkdir()
    _write_sample(old, with_phi=False)
    assert read_showers(old / "t.h5", old / "b.xml").phi is None


def _overrides(d: Path, out: str, *extra: str) -> list[str]:
    return tiny_fm_overrides(d, out, 0, "model.eta_cells=[0.025]", *extra)


def test_training_reads_incident_phi_and_bad_configs_exit_2(tmp_path, capsys):
    from lhcml.cli import main
    from lhcml.train.fastcalo import load_generator
    from lhcml.train.protocol import load_trainable_config

    cfg_path = "configs/fastcalo/fm_strips_phi.yaml"
    d = _write_sample(tmp_path)
    trainer, cfg = load_trainable_config(cfg_path, _overrides(d, "ok", f"model.phi_cells=[{W_PHI!r}]"))
    model, _ = load_generator(trainer.fit(cfg))
    assert model.phi_cells == (256,) and model.cond_dim == 2 + 2 + 2
    (tmp_path / "nophi").mkdir()
    nophi = _write_sample(tmp_path / "nophi", with_phi=False)
    for data, extra, msg in ((d, ["model.phi_cells=[0.0245]"], "phi_cells = widths 2 pi / n"),
                             (nophi, [], "carry no incident_phi")):  # fmt: skip
        args = ["train", cfg_path, *[a for o in _overrides(data, "bad", *extra) for a in ("--set", o)]]
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, err
        assert not (data / "bad" / "checkpoints").exists()


def test_export_round_trip_takes_phi_and_moves_with_the_phase(tmp_path):
    from lhcml.export.fastcalo import export_generator, input_names
    from lhcml.sim.fastcalo import OnnxShowerModel, voxel_binning

    b = voxel_binning("photon")
    torch.manual_seed(0)
    m = CaloFlowMatching(b.n_voxels, b.layer_sizes, 1.0, 260.0, hidden=16, depth=1, steps=2,
                         eta_range=(0.0, 1.37), eta_cells=[0.025], phi_cells=[W_PHI, 4 * W_PHI])  # fmt: skip
    m.prepare(torch.full((8,), 10.0), torch.rand(8, b.n_voxels) * (10.0 / b.n_voxels))
    assert input_names(m) == ("incident_energy", "eta", "phi", "noise")
    # onnxruntime agreement with PyTorch is asserted inside (n_check showers at random |eta|, phi)
    export_generator(m.eval(), tmp_path / "phi.onnx", binning_file_sha256=b.sha256, particle="photon",
                     binning_xml=b.to_xml(), timing=False, n_check=16, atol=1e-4)  # fmt: skip
    onnx = OnnxShowerModel(str(tmp_path / "phi.onnx"))
    assert onnx.conditions_on_phi and onnx.conditions_on_eta
    e, eta = np.full(4, 20.0), np.full(4, 0.21)
    phi0 = 0.3 * W_PHI + 10 * W_PHI
    gen = lambda phi: onnx.generate(e, np.random.default_rng(0), eta=eta, phi=np.full(4, phi))  # noqa: E731
    a = gen(phi0)
    np.testing.assert_array_equal(a, gen(phi0))
    assert np.abs(a - gen(phi0 + 0.5 * W_PHI)).max() > 1e-6  # half a middle cell on: another shower
    # four whole middle cells (one strip cell) on: the same phases, the same shower up to float round-off
    np.testing.assert_allclose(gen(phi0 + 4 * W_PHI), a, rtol=0, atol=1e-4 * 20.0)
    with pytest.raises(ConfigError, match="pass phi"):
        onnx.generate(e, np.random.default_rng(0), eta=eta)


class _PhiProbe(FastCaloGenerator):
    """A constructed generator: all of E in the middle layer's impact cell when the photon hits the
    lower half of its φ cell (phase < 0.5, read from sin/cos of 256 φ as the condition does), in the
    next cell in φ when it hits the upper half."""

    registry_name = "phi_probe"

    def __init__(self, binning) -> None:
        super().__init__(binning.n_voxels, binning.layer_sizes, 1.0, 260.0, phi_cells=[W_PHI])
        self.noise_dim = 1
        names = list(binning.layer_names)
        lay = binning.layers[names.index("middle")]
        start = sum(binning.layer_sizes[: names.index("middle")])
        centre = start + (lay.n_eta // 2) * lay.n_phi + lay.n_phi // 2
        hot = torch.zeros(2, binning.n_voxels)
        hot[0, centre], hot[1, centre + 1] = 1.0, 1.0
        self.register_buffer("hot", hot)

    def sample(self, energy_gev, noise, eta=None, phi=None):
        c = self.condition(energy_gev, eta, phi)
        upper = (c[:, 1:2] < 0).float()  # sin(2 pi phase) < 0: phase in (0.5, 1)
        return energy_gev.reshape(-1, 1) * ((1 - upper) * self.hot[:1] + upper * self.hot[1:]) + 0.0 * noise[:, :1]

    def loss_terms(self, energy_gev, showers, phase):  # pragma: no cover - never trained
        return {}


def test_calo_fast_passes_each_photons_phi(tmp_path):
    from lhcml.export.fastcalo import export_generator
    from lhcml.sim.calo_geometry import load_geometry
    from lhcml.sim.fastcalo import FastCalo, impact_cells, voxel_binning

    b = voxel_binning("photon")
    geo = load_geometry()
    export_generator(_PhiProbe(b).eval(), tmp_path / "probe.onnx", binning_file_sha256=b.sha256, particle="photon",
                     binning_xml=b.to_xml(), timing=False, n_check=8)  # fmt: skip
    fast = FastCalo.from_option(f"fast:{tmp_path / 'probe.onnx'}")
    # photons in the lower and the upper half of their middle phi cells, at phi of both signs
    cells = np.array([10, -40, 77, -3])
    phase = np.array([0.2, 0.3, 0.8, 0.7])
    phi = (cells + phase) * W_PHI
    eta = np.array([0.3, -0.5, 0.9, 0.1])
    pt = 50.0 / np.cosh(eta)
    z = np.zeros(4)
    p = {"pid": np.full(4, 22), "e": np.full(4, 50.0), "px": pt * np.cos(phi), "py": pt * np.sin(phi),
         "pz": pt * np.sinh(eta), "charge": z, "vx": z, "vy": z, "vz": z}  # fmt: skip
    assert fast.select(p).all()
    grids = {lay.name: np.zeros((4, lay.n_eta, lay.n_phi), np.float32) for lay in geo.readout_layers}
    fast.deposit(p, np.arange(4), grids, geo, np.random.default_rng(0))
    ie, ip = impact_cells(eta, phi, z, pt, z, z, z, b, geo)
    k = list(b.layer_names).index("middle")
    mid = grids["middle"]
    n_phi = mid.shape[2]
    for i in range(4):
        j = ip[i, k] if phase[i] < 0.5 else (ip[i, k] + 1) % n_phi
        assert mid[i, ie[i, k], j] == pytest.approx(50e3, rel=1e-5), (i, phase[i])
        assert mid[i].sum() == pytest.approx(50e3, rel=1e-5)
