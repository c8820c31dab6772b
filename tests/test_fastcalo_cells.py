"""The generator told where inside the calorimeter cells a photon hits (``model.eta_cells``) and
fine-tuning from a stored generator (``init_from``) (issue 15, docs/benchmarks/fastcalo.md
"Eleventh version").

* a detailed shower's centroid in the cell grid follows the impact position inside the cell
  (``|η| / Δη mod 1``; correlation 0.92 for the middle layer on 2 000 photons): a tiny
  flow-matching model given the phase (``eta_cells``) learns such a dependence from synthetic
  showers, the same model given |η| only (``eta_range``) does not in the same training;
* bad ``eta_cells`` and ``init_from`` values give one clear message, and ``lhcml train`` exits 2;
* ``init_from`` copies a stored generator into one with more condition columns so that it
  generates exactly what the stored one did (zero weights for the new columns);
* the exported ONNX graph computes the phase from its ``eta`` input: onnxruntime agrees with
  PyTorch (asserted by the export) and the graph's showers move with the phase.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _fastcalo_helpers import assert_train_exits_2, fit_cfm, tiny_fm_overrides, two_cell_showers

from lhcml.errors import CheckpointMismatchError, ConfigError
from lhcml.models.fastcalo.fm import CaloFlowMatching

LAYERS = [4, 6]
V = sum(LAYERS)
CELL = 0.025


def phase_showers(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Synthetic 10 GeV showers whose first layer (4 cells) shares the energy between its two
    central cells as the impact position inside a cell of width ``CELL`` says (as the detailed
    middle layer's centroid: phase 0 all in cell 1, phase 1 all in cell 2); ``(E, showers, |η|)``."""
    rng = np.random.default_rng(seed)
    eta = rng.uniform(0.2, 0.3, n)
    x = two_cell_showers(rng, (eta / CELL) % 1.0)
    return torch.full((n,), 10.0), x, torch.from_numpy(eta.astype(np.float32))


def small_fm(cells: list[float] | None) -> CaloFlowMatching:
    torch.manual_seed(3)
    return CaloFlowMatching(V, LAYERS, 1.0, 100.0, hidden=96, depth=2, steps=6, voxel_space="log",
                            threshold_kev=1000.0, eta_range=(0.0, 1.37), eta_cells=cells)  # fmt: skip


def centroid_phase_correlation(model: CaloFlowMatching, n: int = 600) -> float:
    e, _, eta = phase_showers(n, 99)
    with torch.no_grad():
        x = model.generate(e, generator=torch.Generator().manual_seed(1), eta=eta).numpy()
    first = x[:, :4]
    centroid = (first * np.arange(4)).sum(1) / np.clip(first.sum(1), 1e-9, None)
    return float(np.corrcoef(centroid, (eta.numpy() / CELL) % 1.0)[0, 1])


def test_the_cell_phase_condition_learns_where_the_shower_sits():
    torch.set_num_threads(1)
    e, x, eta = phase_showers(3000, 11)
    ph = (eta.numpy() / CELL) % 1.0
    first = x.numpy()[:, :4]
    truth = float(np.corrcoef((first * np.arange(4)).sum(1) / first.sum(1), ph)[0, 1])
    assert truth > 0.95
    corr = {}
    for name, cells in (("cells", [CELL]), ("eta only", None)):
        model = small_fm(cells)
        model.prepare(e, x)
        fit_cfm(model, e, x, eta, 350)
        corr[name] = centroid_phase_correlation(model.eval())
    # told the phase, the model puts the shower where the cell position says; from |eta| scaled over
    # 0-1.37 (the phase a 0.025 period of it) the same training does not
    assert corr["cells"] > 0.6, corr  # 0.78 measured (synthetic truth 0.97); |eta| only: -0.01
    assert abs(corr["eta only"]) < 0.3, corr


def test_bad_eta_cells_give_one_clear_message():
    with pytest.raises(ConfigError, match="eta_cells needs eta_range"):
        CaloFlowMatching(V, LAYERS, 1.0, 100.0, eta_cells=[0.025])
    with pytest.raises(ConfigError, match="eta_cells in \\(0, 1\\)"):
        CaloFlowMatching(V, LAYERS, 1.0, 100.0, eta_range=(0.0, 1.37), eta_cells=[0.0])
    with pytest.raises(ConfigError, match="eta_cells must be a list of cell widths"):
        CaloFlowMatching(V, LAYERS, 1.0, 100.0, eta_range=(0.0, 1.37), eta_cells=["middle"])


def _write_sample(tmp_path: Path) -> Path:
    from lhcml.data.calochallenge import Binning, LayerBinning, write_binning, write_showers

    layers = (LayerBinning(id=1, kind="cells", name="l0", n_eta=4, n_phi=1, deta=CELL, dphi=0.0245),
              LayerBinning(id=2, kind="cells", name="l1", n_eta=2, n_phi=3, deta=CELL, dphi=0.0245))  # fmt: skip
    b = write_binning(Binning("photon", 22, layers), tmp_path / "b.xml")
    e, x, eta = phase_showers(96, 5)
    write_showers(tmp_path / "t.h5", e.numpy(), x.numpy(), b, eta=eta.numpy())
    return tmp_path


def _overrides(d: Path, out: str, *extra: str) -> list[str]:
    return tiny_fm_overrides(d, out, 0, *extra)


def test_init_from_starts_where_the_stored_model_stood_and_bad_values_fail(tmp_path):
    from lhcml.train.fastcalo import build_generator, init_from_checkpoint, load_generator
    from lhcml.train.protocol import load_trainable_config

    d = _write_sample(tmp_path)
    cfg_path = "configs/fastcalo/fm_strips_cells.yaml"
    # the stored model: fm_strips_cells' settings without eta_cells and without init_from
    trainer, cfg = load_trainable_config(cfg_path, _overrides(d, "base", "model.eta_cells=null", "init_from=null"))
    base_ckpt = trainer.fit(cfg)
    base, meta = load_generator(base_ckpt)
    # fine-tuned from it, with the cell phases: trains (one epoch) and keeps its config
    trainer, cfg = load_trainable_config(cfg_path, _overrides(d, "cells", f"init_from={base_ckpt}"))
    tuned, _ = load_generator(trainer.fit(cfg))
    assert tuned.eta_cells == (0.025, 0.05, 0.003125) and tuned.cond_dim == 2 + 6
    # before any step, the widened model generates exactly what the stored one does
    import yaml

    init = yaml.safe_load(meta["model_init_yaml"])
    init["eta_cells"] = [0.025]
    fresh = build_generator("fastcalo_fm", init)
    assert init_from_checkpoint(fresh, base_ckpt) == {"copied": len(fresh.state_dict()) - 1, "widened": 1, "kept": 0}
    e, _, eta = phase_showers(32, 7)
    noise = base.draw_noise(32, torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval().sample(e, noise, eta), base.sample(e, noise, eta))
    # errors: a missing file, another model, a model that is not the same apart from conditions
    with pytest.raises(ConfigError, match="does not exist"):
        init_from_checkpoint(fresh, tmp_path / "nope.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match="not a fast-calo checkpoint"):
        init_from_checkpoint(fresh, tmp_path / "junk.ckpt")
    init["hidden"] = 24
    with pytest.raises(CheckpointMismatchError, match="does not fit this model"):
        init_from_checkpoint(build_generator("fastcalo_fm", init), base_ckpt)


def test_lhcml_train_with_a_bad_eta_cells_exits_2(tmp_path, capsys):
    d = _write_sample(tmp_path)
    assert_train_exits_2("configs/fastcalo/fm_strips_cells.yaml",
                         _overrides(d, "bad", "model.eta_cells=[2.0]", "init_from=null"), "eta_cells in (0, 1)",
                         d / "bad", capsys)  # fmt: skip


def test_export_round_trip_computes_the_phase_in_the_graph(tmp_path):
    from lhcml.export.fastcalo import export_generator
    from lhcml.sim.fastcalo import OnnxShowerModel, voxel_binning

    b = voxel_binning("photon")
    torch.manual_seed(0)
    m = CaloFlowMatching(b.n_voxels, b.layer_sizes, 1.0, 260.0, hidden=16, depth=1, steps=2,
                         eta_range=(0.0, 1.37), eta_cells=[0.025, 0.003125])  # fmt: skip
    m.prepare(torch.full((8,), 10.0), torch.rand(8, b.n_voxels) * (10.0 / b.n_voxels))
    # onnxruntime agreement with PyTorch is asserted inside (n_check showers at random |eta|)
    export_generator(m.eval(), tmp_path / "cells.onnx", binning_file_sha256=b.sha256, particle="photon",
                     binning_xml=b.to_xml(), timing=False, n_check=16, atol=1e-4)  # fmt: skip
    onnx = OnnxShowerModel(str(tmp_path / "cells.onnx"))
    e = np.full(4, 20.0)
    a = onnx.generate(e, np.random.default_rng(0), eta=np.full(4, 0.2125))
    same = onnx.generate(e, np.random.default_rng(0), eta=np.full(4, 0.2125))
    half = onnx.generate(e, np.random.default_rng(0), eta=np.full(4, 0.2250))  # half a middle cell on
    np.testing.assert_array_equal(a, same)
    assert np.abs(a - half).max() > 1e-6
