"""Voxel variables standardised per incident energy and |η| (``model.eta_standardisation``,
``configs/fastcalo/fm_strips_etastd.yaml``; issue 15, docs/benchmarks/fastcalo.md "Fifteenth version").

The ``fm_strips_phi`` teacher's strips had a second maximum 20-40 times the detailed one at
|η| > 1.05 and high energy: there the detailed side strips fluctuate far less than the same voxel
over the whole 1-260 GeV x 0-1.37 sample, and the generator produced about the global width.

* fitted on synthetic showers whose tail share narrows and moves with |η|, the (E, |η|)
  standardisation gives the tail about zero mean and unit width in every |η| bin; the energy-only
  one leaves it 2.5 times too narrow at large |η| and a unit off-centre;
* encode -> decode is exact with it (the readout threshold and renormalisation as before);
* missing |η|, the option without ``energy_standardisation`` or without ``eta_range`` give one
  clear message, and ``lhcml train`` exits 2;
* a flow-matching model with it exports (traced and lean ONNX graphs agree with PyTorch);
* ``init_from`` a model without it keeps the freshly fitted standardisation.

And the strips' voxel variables whitened (``model.first_layer_whitening``,
``configs/fastcalo/fm_strips_white.yaml``): the detailed side strips fluctuate together; a generator
that draws each voxel with the right spread but independently makes neighbours differ by factors
of ~3 (the second maximum); whitened, the same independent draws keep them smooth. Exact round
trip, unit covariance on the training sample, both ONNX graphs, ``init_from``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _fastcalo_helpers import assert_train_exits_2, random_photon_showers, tiny_fm_overrides

from lhcml.errors import ConfigError, SchemaError
from lhcml.models.fastcalo.flow import CaloFlowVariables
from lhcml.models.fastcalo.fm import CaloFlowMatching

LAYERS = [6, 4]
V = sum(LAYERS)
TAIL = 0  # the first layer's outermost cell


def eta_showers(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Synthetic showers ``(E GeV, showers GeV, |η|)``: a first layer of 6 cells whose tail cell's
    log share has mean ``-5 + 2 |η|`` and width ``1.0 - 0.47 |η|`` (0.36 at 1.37, as the detailed
    strips narrow at large |η|), independent of E; a core cell takes the rest; a second layer
    Dirichlet(30)."""
    rng = np.random.default_rng(seed)
    e = np.exp(rng.uniform(np.log(1.0), np.log(100.0), n))
    eta = rng.uniform(0.0, 1.37, n)
    tail = np.exp(-5.0 + 2.0 * eta + (1.0 - 0.47 * eta) * rng.standard_normal(n))
    first = np.zeros((n, 6))
    first[:, TAIL] = tail
    first[:, 1:5] = rng.dirichlet(np.full(4, 50.0), size=n) * 0.02
    first[:, 5] = 1.0 - first.sum(1)
    second = rng.dirichlet(np.full(4, 30.0), size=n)
    x = np.concatenate([0.3 * e[:, None] * first, 0.6 * e[:, None] * second], 1)
    return (torch.from_numpy(e.astype(np.float32)), torch.from_numpy(x.astype(np.float32)),
            torch.from_numpy(eta.astype(np.float32)))  # fmt: skip


def _vars(energy: bool, eta: bool) -> CaloFlowVariables:
    return CaloFlowVariables(LAYERS, u0_max=2.0, threshold_kev=1.0, voxel_space="log",
                             energy_standardisation=energy, eta_standardisation=eta)  # fmt: skip


def test_eta_standardisation_gives_unit_width_at_every_eta():
    e, x, eta = eta_showers(20000, 1)
    g = torch.Generator().manual_seed(0)
    stats = {}
    for name, (en, et) in {"global": (False, False), "energy": (True, False), "energy+eta": (True, True)}.items():
        v = _vars(en, et)
        v.fit(e, x, torch.Generator().manual_seed(0), eta=eta if et else None)
        _, x_v, _ = v.encode(e, v.dequantise(x, g), g, eta=eta if et else None)
        col = x_v[:, TAIL].numpy()
        a = eta.numpy()
        stats[name] = [(float(col[m].mean()), float(col[m].std())) for m in (a < 0.3, (a > 0.6) & (a < 0.8), a > 1.15)]
    for mean, std in stats["energy+eta"]:
        assert abs(mean) < 0.2 and 0.8 < std < 1.25, stats
    # without |eta| the large-|eta| tail sits at a fraction of a unit: a generator error of fixed
    # standardised size is then several times its true spread
    for name in ("global", "energy"):
        assert stats[name][2][1] < 0.5 and abs(stats[name][2][0]) > 0.8, stats  # measured 0.40 and 1.08


def test_round_trip_is_exact_with_eta_standardisation():
    e, x, eta = eta_showers(2000, 2)
    v = _vars(True, True)
    v.fit(e, x, torch.Generator().manual_seed(0), eta=eta)
    x_u, x_v, _ = v.encode(e, x, torch.Generator().manual_seed(1), eta=eta)
    back = v.decode_voxels(x_v, v.decode_layers(x_u, e), e, eta)
    plain = _vars(False, False)
    plain.fit(e, x, torch.Generator().manual_seed(0))
    p_u, p_v, _ = plain.encode(e, x, torch.Generator().manual_seed(1))
    ref = plain.decode_voxels(p_v, plain.decode_layers(p_u, e))
    torch.testing.assert_close(back, ref, rtol=1e-4, atol=1e-6)
    # and it is the shower (every voxel of these showers is above the 1 keV threshold)
    torch.testing.assert_close(back, x, rtol=1e-3, atol=1e-6)


def test_missing_eta_and_bad_settings_give_one_clear_message():
    e, x, eta = eta_showers(200, 3)
    v = _vars(True, True)
    with pytest.raises(SchemaError, match="needs one \\|eta\\| per training shower"):
        v.fit(e, x)
    with pytest.raises(SchemaError, match="needs one \\|eta\\| per training shower"):
        v.fit(e, x, eta=eta[:10])
    v.fit(e, x, eta=eta)
    with pytest.raises(ValueError, match="need the incident \\|eta\\|"):
        v.encode(e, x)
    with pytest.raises(ConfigError, match="eta_standardisation needs energy_standardisation"):
        _vars(False, True)
    with pytest.raises(ConfigError, match="eta_standardisation needs a model conditioned on \\|eta\\|"):
        CaloFlowMatching(V, LAYERS, 1.0, 100.0, energy_standardisation=True, eta_standardisation=True)


def test_flow_matching_with_it_samples_and_exports(tmp_path):
    from lhcml.export.fastcalo import export_generator
    from lhcml.sim.fastcalo import OnnxShowerModel, voxel_binning

    b = voxel_binning("photon")
    torch.manual_seed(0)
    m = CaloFlowMatching(b.n_voxels, b.layer_sizes, 1.0, 260.0, hidden=16, depth=1, steps=2, voxel_space="log",
                         threshold_kev=1000.0, energy_standardisation=True, eta_standardisation=True,
                         eta_range=(0.0, 1.37), align_max_shift=4, align_n_phi=3)  # fmt: skip
    e, eta, x = random_photon_showers(b.n_voxels)
    m.prepare(e, x, eta=eta)
    assert m.vars.v_mean_coef.shape == (6, b.n_voxels) and float(m.vars.eta_ref[1]) > 0.1
    loss = m.loss_terms(e[:32], x[:32], "model", eta=eta[:32])["cfm"]
    assert torch.isfinite(loss)
    m.eval()
    with torch.no_grad():
        s1 = m.generate(e[:8], generator=torch.Generator().manual_seed(1), eta=eta[:8])
        s2 = m.generate(e[:8], generator=torch.Generator().manual_seed(1), eta=torch.full((8,), 1.3))
    assert torch.all(s1 >= 0) and torch.isfinite(s1).all() and (s1 - s2).abs().max() > 0  # |eta| enters the decoding
    # onnxruntime agreement with PyTorch is asserted inside the export, for both graphs
    for lean in (False, True):
        path = tmp_path / f"etastd_{lean}.onnx"
        export_generator(m, path, binning_file_sha256=b.sha256, particle="photon", binning_xml=b.to_xml(),
                         timing=False, n_check=64, atol=1e-4, lean=lean)  # fmt: skip
        gen = OnnxShowerModel(str(path))
        out = gen.generate(np.full(4, 50.0), np.random.default_rng(0), eta=np.full(4, 1.2))
        assert out.shape == (4, b.n_voxels) and np.all(np.isfinite(out))


def _write_sample(tmp_path: Path) -> Path:
    from lhcml.data.calochallenge import Binning, LayerBinning, write_binning, write_showers

    layers = (LayerBinning(id=1, kind="cells", name="l0", n_eta=6, n_phi=1, deta=0.025, dphi=0.0245),
              LayerBinning(id=2, kind="cells", name="l1", n_eta=2, n_phi=2, deta=0.025, dphi=0.0245))  # fmt: skip
    b = write_binning(Binning("photon", 22, layers), tmp_path / "b.xml")
    e, x, eta = eta_showers(96, 5)
    write_showers(tmp_path / "t.h5", e.numpy(), x.numpy(), b, eta=eta.numpy())
    return tmp_path


def _overrides(d: Path, out: str, *extra: str) -> list[str]:
    return tiny_fm_overrides(d, out, 0, "model.eta_cells=null", "model.phi_cells=null", *extra)


def test_init_from_a_model_without_it_keeps_the_fitted_standardisation(tmp_path):
    import yaml

    from lhcml.train.fastcalo import build_generator, init_from_checkpoint, load_generator
    from lhcml.train.protocol import load_trainable_config

    d = _write_sample(tmp_path)
    cfg_path = "configs/fastcalo/fm_strips_etastd.yaml"
    trainer, cfg = load_trainable_config(cfg_path, _overrides(d, "base", "model.energy_standardisation=false",
                                                              "model.eta_standardisation=false"))  # fmt: skip
    base_ckpt = trainer.fit(cfg)
    base, meta = load_generator(base_ckpt)
    assert not base.vars.energy_standardisation
    trainer, cfg = load_trainable_config(cfg_path, _overrides(d, "tuned", f"init_from={base_ckpt}"))
    tuned, _ = load_generator(trainer.fit(cfg))
    assert tuned.vars.eta_standardisation and float(tuned.vars.eta_ref[1]) > 0.1
    init = yaml.safe_load(meta["model_init_yaml"])
    init.update(energy_standardisation=True, eta_standardisation=True)
    fresh = build_generator("fastcalo_fm", init)
    e, x, eta = eta_showers(96, 5)
    fresh.prepare(e, x, eta=eta)
    coef = fresh.vars.v_mean_coef.clone()
    counts = init_from_checkpoint(fresh, base_ckpt)
    assert counts["kept"] == 4 and counts["widened"] == 0  # v_mean_coef, v_var_coef, log_e_ref, eta_ref
    torch.testing.assert_close(fresh.vars.v_mean_coef, coef)
    torch.testing.assert_close(fresh.velocity[0].weight, base.velocity[0].weight)


def test_lhcml_train_with_eta_standardisation_but_no_eta_exits_2(tmp_path, capsys):
    d = _write_sample(tmp_path)
    assert_train_exits_2("configs/fastcalo/fm_strips_etastd.yaml", _overrides(d, "bad", "model.eta_range=null"),
                         "eta_standardisation needs a model conditioned on |eta|", d / "bad", capsys)


# --------------------------------------------------------------------------------------------
# the first layer's voxel variables whitened (model.first_layer_whitening, fm_strips_white.yaml)
# --------------------------------------------------------------------------------------------


def coherent_showers(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Synthetic showers whose first layer's five side cells rise and fall *together* (one width
    factor per shower, as the detailed strips' tails) on top of a core cell; second layer Dirichlet."""
    rng = np.random.default_rng(seed)
    e = np.exp(rng.uniform(np.log(5.0), np.log(100.0), n))
    eta = rng.uniform(0.0, 1.37, n)
    width = np.clip(rng.standard_normal(n), -2.5, 2.5)  # the core keeps > 30 % of the layer
    side = np.exp(-4.0 + 0.8 * width[:, None] + 0.05 * rng.standard_normal((n, 5)))
    first = np.concatenate([side, 1.0 - side.sum(1, keepdims=True)], 1)
    second = rng.dirichlet(np.full(4, 30.0), size=n)
    x = np.concatenate([0.3 * e[:, None] * first, 0.6 * e[:, None] * second], 1)
    return (torch.from_numpy(e.astype(np.float32)), torch.from_numpy(x.astype(np.float32)),
            torch.from_numpy(eta.astype(np.float32)))  # fmt: skip


def test_whitening_is_exact_and_makes_independent_errors_coherent():
    e, x, eta = coherent_showers(5000, 4)
    white = CaloFlowVariables(LAYERS, u0_max=2.0, threshold_kev=1.0, voxel_space="log", first_layer_whitening=True)
    plain = _vars(False, False)
    for v in (white, plain):
        v.fit(e, x, torch.Generator().manual_seed(0))
    # exact round trip, and unit, uncorrelated variables on the training sample
    x_u, x_v, _ = white.encode(e, x, torch.Generator().manual_seed(1))
    torch.testing.assert_close(white.decode_voxels(x_v, white.decode_layers(x_u, e)), x, rtol=1e-3, atol=1e-6)
    cov = torch.cov(x_v[:, :6].T.double())
    torch.testing.assert_close(cov, torch.eye(6, dtype=torch.float64), atol=0.05, rtol=0)
    # a generator that draws every variable independently with the right (unit) spread: whitened, the
    # side cells still move together as the detailed ones do (neighbour ratios stay smooth); per-voxel,
    # each fluctuates on its own and neighbours differ by factors of ~3 (spikes: a second maximum)
    g = torch.Generator().manual_seed(2)
    z = torch.randn(x_v.shape, generator=g)
    spread = {}
    for name, v in (("white", white), ("plain", plain)):
        out = v.decode_voxels(z, v.decode_layers(x_u, e))
        spread[name] = float(torch.log(out[:, 0].clamp(min=1e-12) / out[:, 1].clamp(min=1e-12)).std())
    truth = float(torch.log(x[:, 0] / x[:, 1]).std())  # 0.05 sqrt 2
    assert truth < 0.1 and spread["white"] < 0.15 and spread["plain"] > 0.6, (truth, spread)  # 0.071, 0.071, 1.13


def test_flow_matching_with_whitening_exports_and_fine_tunes(tmp_path):
    import yaml

    from lhcml.export.fastcalo import export_generator
    from lhcml.sim.fastcalo import voxel_binning
    from lhcml.train.fastcalo import build_generator, init_from_checkpoint, load_generator
    from lhcml.train.protocol import load_trainable_config

    b = voxel_binning("photon")
    torch.manual_seed(0)
    m = CaloFlowMatching(b.n_voxels, b.layer_sizes, 1.0, 260.0, hidden=16, depth=1, steps=2, voxel_space="log",
                         threshold_kev=1000.0, first_layer_whitening=True, eta_range=(0.0, 1.37), align_max_shift=4,
                         align_n_phi=3)  # fmt: skip
    e, eta, x = random_photon_showers(b.n_voxels, 512)
    m.prepare(e, x, eta=eta)
    assert not torch.allclose(m.vars.white_enc, torch.eye(171))
    for lean in (False, True):  # onnxruntime agreement with PyTorch asserted inside, for both graphs
        export_generator(m.eval(), tmp_path / f"white_{lean}.onnx", binning_file_sha256=b.sha256, particle="photon",
                         binning_xml=b.to_xml(), timing=False, n_check=64, atol=1e-4, lean=lean)  # fmt: skip
    # init_from a model without it: the fitted whitening is kept, the weights copied
    d = _write_sample(tmp_path)
    cfg_path = "configs/fastcalo/fm_strips_white.yaml"
    trainer, cfg = load_trainable_config(cfg_path, _overrides(d, "base", "model.first_layer_whitening=false"))
    base_ckpt = trainer.fit(cfg)
    base, meta = load_generator(base_ckpt)
    trainer, cfg = load_trainable_config(cfg_path, _overrides(d, "tuned", f"init_from={base_ckpt}"))
    tuned, _ = load_generator(trainer.fit(cfg))
    assert tuned.vars.first_layer_whitening and not torch.allclose(tuned.vars.white_enc, torch.eye(6))
    init = yaml.safe_load(meta["model_init_yaml"])
    init.update(first_layer_whitening=True)
    fresh = build_generator("fastcalo_fm", init)
    e2, x2, eta2 = eta_showers(96, 5)
    fresh.prepare(e2, x2, eta=eta2)
    w = fresh.vars.white_enc.clone()
    assert init_from_checkpoint(fresh, base_ckpt)["kept"] == 2
    torch.testing.assert_close(fresh.vars.white_enc, w)
