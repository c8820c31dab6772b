"""Strips generated as ratios outwards from their maximum (``model.strip_ratios``,
``configs/fastcalo/fm_strips_ratio.yaml``; issue 15, docs/benchmarks/fastcalo.md "Sixteenth version").

The ``fm_strips_phi`` teacher's side strips spiked independently (neighbouring-strip log-ratio
spread 1-2.5 against 0.3-0.9 detailed), the strips' second maximum ΔE 464 MeV against 52.
With ``strip_ratios`` the strips (aligned on their maximum row) are the maximum row's log share,
the successive log-ratios of the φ-summed rows going outwards and, per row, the side φ cells'
log-ratios to the centre one:

* encode -> decode is exact (the transform alone, and the whole voxel chain with empty cells);
* a generator that draws every variable independently with the right spread gives side strips
  whose neighbour log-ratios spread as the truth's; per-voxel variables give spikes;
* both ONNX graphs agree with PyTorch (asserted inside the export);
* bad options (no alignment, logit voxels, a non-boolean, a grid that does not fit) give one
  clear message, ``lhcml train`` exits 2 without a checkpoint; ``init_from`` across the two
  representations is refused in both directions, between two ratio models it copies.

``model.strip_first_ratio`` (``exp`` / ``softplus``; the Eighteenth version): the two first outward row
log-ratios generated as ``-exp(y)`` / ``-softplus(y)`` — known answers and an exact inverse, the centre row
above both neighbours for any input (the free ratios lose it on random draws), the voxel chain round trip,
``free`` unchanged (no new buffer), both ONNX graphs, bad values, ``init_from`` only within one mode.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _fastcalo_helpers import (
    assert_train_exits_2,
    assert_trains_samples_exports,
    photon_fm_model,
    random_photon_showers,
    tiny_fm_overrides,
    write_photon_sample,
)

from lhcml.errors import CheckpointMismatchError, ConfigError
from lhcml.models.fastcalo.flow import CaloFlowVariables
from lhcml.models.fastcalo.fm import CaloFlowMatching

N_ETA, N_PHI = 9, 3
CENTRE = (N_ETA - 1) // 2
LAYERS = [N_ETA * N_PHI, 4]


def strip_showers(n: int, seed: int, p_empty: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic showers ``(E GeV, showers GeV)``: strips of 9 rows x 3 φ cells whose row shares fall
    as ``exp(-slope |i - centre|)`` from the centre row, one slope per shower (log-normal, spread
    0.3: a wider shower lifts all side rows together, as the detailed strips do) and 5 % noise per
    row; the φ cells share each row 0.2 / 0.6 / 0.2 with 10 % noise; a second layer Dirichlet(30).
    The outermost row is left empty in a fraction ``p_empty`` of the showers (cells under the readout
    threshold)."""
    rng = np.random.default_rng(seed)
    e = np.exp(rng.uniform(np.log(5.0), np.log(100.0), n))
    slope = 1.2 * np.exp(0.3 * rng.standard_normal(n))
    dist = np.abs(np.arange(N_ETA) - CENTRE)
    rows = np.exp(-slope[:, None] * dist[None, :] + 0.05 * rng.standard_normal((n, N_ETA)))
    phi = np.array([0.2, 0.6, 0.2]) * np.exp(0.1 * rng.standard_normal((n, N_ETA, N_PHI)))
    strips = rows[:, :, None] * phi / phi.sum(2, keepdims=True)
    strips[rng.random(n) < p_empty, -1, :] = 0.0
    strips = strips.reshape(n, -1)
    strips /= strips.sum(1, keepdims=True)
    second = rng.dirichlet(np.full(4, 30.0), size=n)
    x = np.concatenate([0.3 * e[:, None] * strips, 0.6 * e[:, None] * second], 1)
    return torch.from_numpy(e.astype(np.float32)), torch.from_numpy(x.astype(np.float32))


def _vars(ratios: bool) -> CaloFlowVariables:
    return CaloFlowVariables(LAYERS, u0_max=2.0, threshold_kev=1.0, voxel_space="log", strip_ratios=ratios,
                             strip_grid=(N_ETA, N_PHI) if ratios else None)  # fmt: skip


def _row_ratio_spread(showers: torch.Tensor) -> np.ndarray:
    """Std of ln(S_k / S_k+1) of the φ-summed strip rows k = 1, 2, 3 rows right of the centre (the first
    pair, next to the core, fluctuates little per voxel: the test uses the outer two)."""
    rows = showers[:, : N_ETA * N_PHI].reshape(-1, N_ETA, N_PHI).sum(2).double().clamp(min=1e-12)
    lr = torch.log(rows[:, CENTRE + 1 : N_ETA - 1] / rows[:, CENTRE + 2 : N_ETA])
    return lr.std(0).numpy()


def test_transform_alone_is_an_exact_inverse():
    v = _vars(True)
    y = torch.log(torch.rand(64, N_ETA * N_PHI, dtype=torch.float64).clamp(min=1e-9)) - 3.0
    v = v.double()
    z = v.strip_ratio_encode(y)
    torch.testing.assert_close(v.strip_ratio_decode(z), y, rtol=0, atol=1e-12)
    g, zg = y.reshape(-1, N_ETA, N_PHI), z.reshape(-1, N_ETA, N_PHI)
    s = torch.logsumexp(g, dim=2)
    # known answers: the centre row's log share, then outward log-ratios; φ cells relative to the middle one
    torch.testing.assert_close(zg[:, CENTRE, 1], s[:, CENTRE])
    torch.testing.assert_close(zg[:, CENTRE + 3, 1], s[:, CENTRE + 3] - s[:, CENTRE + 2])
    torch.testing.assert_close(zg[:, CENTRE - 2, 1], s[:, CENTRE - 2] - s[:, CENTRE - 1])
    torch.testing.assert_close(zg[:, 5, 0], g[:, 5, 0] - g[:, 5, 1])
    torch.testing.assert_close(zg[:, 5, 2], g[:, 5, 2] - g[:, 5, 1])


def test_round_trip_through_the_voxel_chain_is_exact():
    e, x = strip_showers(3000, 1)
    v = _vars(True)
    v.fit(e, x, torch.Generator().manual_seed(0))
    x_u, x_v, _ = v.encode(e, x, torch.Generator().manual_seed(1))
    back = v.decode_voxels(x_v, v.decode_layers(x_u, e))
    torch.testing.assert_close(back, x, rtol=1e-3, atol=1e-6)  # the empty rows come back empty
    assert float(back[:, N_ETA * N_PHI - N_PHI : N_ETA * N_PHI].eq(0).all(1).float().mean()) > 0.15
    # standardised: every variable has unit width on the training sample
    torch.testing.assert_close(x_v.std(0), torch.ones(x_v.shape[1]), atol=0.05, rtol=0)


def test_independent_errors_give_smooth_side_strips_not_spikes():
    e, x = strip_showers(6000, 2, p_empty=0.0)
    ratio, plain = _vars(True), _vars(False)
    for v in (ratio, plain):
        v.fit(e, x, torch.Generator().manual_seed(0))
    truth = _row_ratio_spread(x)[1:]  # 2-3 and 3-4 rows out
    # a generator that gets every variable's spread right but draws them independently
    g = torch.Generator().manual_seed(3)
    spread = {}
    for name, v in (("ratio", ratio), ("plain", plain)):
        x_u, x_v, _ = v.encode(e, x, torch.Generator().manual_seed(1))
        z = torch.randn(x_v.shape, generator=g)
        spread[name] = _row_ratio_spread(v.decode_voxels(z, v.decode_layers(x_u, e)))[1:]
    # the truth's neighbour spread is the slope's (0.3 x 1.2) and the rows' noise: ~0.40
    assert np.all(truth > 0.3) and np.all(truth < 0.5), (truth, spread)
    # ratios: each neighbour ratio drawn with its own (true) spread -> as smooth as the truth
    assert np.all(np.abs(spread["ratio"] / truth - 1.0) < 0.15), (truth, spread)
    # per voxel: the side rows spike independently, neighbours differ by factors of several
    assert np.all(spread["plain"] > 1.7 * truth), (truth, spread)


def _photon_model(**kw) -> CaloFlowMatching:
    return photon_fm_model(**kw)


def test_flow_matching_with_ratios_trains_samples_and_exports(tmp_path):
    def check(m, b):
        assert m.vars.strip_grid == (57, 3)

    assert_trains_samples_exports(_photon_model(), tmp_path, "ratio", check)


def test_bad_options_give_one_clear_message():
    with pytest.raises(ConfigError, match="strip_ratios needs align_max_shift > 0"):
        _photon_model(align_max_shift=0)
    with pytest.raises(ConfigError, match="strip_ratios needs voxel_space: log"):
        _photon_model(voxel_space="logit")
    with pytest.raises(ConfigError, match="strip_ratios must be true or false"):
        _photon_model(strip_ratios="yes")
    with pytest.raises(ConfigError, match="needs the first layer's grid"):
        CaloFlowVariables(LAYERS, voxel_space="log", strip_ratios=True, strip_grid=(8, 3))
    with pytest.raises(ConfigError, match="needs the first layer's grid"):
        CaloFlowVariables(LAYERS, voxel_space="log", strip_ratios=True)


def _write_sample(tmp_path: Path) -> Path:
    from lhcml.data.calochallenge import LayerBinning

    layers = (LayerBinning(id=1, kind="cells", name="l0", n_eta=N_ETA, n_phi=N_PHI, deta=0.003125, dphi=0.098),
              LayerBinning(id=2, kind="cells", name="l1", n_eta=2, n_phi=2, deta=0.025, dphi=0.0245))  # fmt: skip
    return write_photon_sample(tmp_path, layers, *strip_showers(96, 5))


def _overrides(d: Path, out: str, *extra: str) -> list[str]:
    return tiny_fm_overrides(d, out, 2, *extra)


def test_shipped_config_trains_and_init_from_is_refused_across_representations(tmp_path):
    from lhcml.train.fastcalo import load_generator
    from lhcml.train.protocol import load_trainable_config

    d = _write_sample(tmp_path)
    cfg_path = "configs/fastcalo/fm_strips_ratio.yaml"
    trainer, cfg = load_trainable_config(cfg_path, _overrides(d, "ratio"))
    ratio_ckpt = trainer.fit(cfg)
    ratio, _ = load_generator(ratio_ckpt)
    assert ratio.vars.strip_ratios and ratio.vars.strip_grid == (N_ETA, N_PHI)
    trainer, cfg = load_trainable_config(cfg_path, _overrides(d, "plain", "model.strip_ratios=false"))
    plain_ckpt = trainer.fit(cfg)
    # a ratio model from a plain one and a plain one from a ratio one: refused, one message
    for out, ckpt, extra in (("a", plain_ckpt, ()), ("b", ratio_ckpt, ("model.strip_ratios=false",))):
        trainer, cfg = load_trainable_config(cfg_path, _overrides(d, out, f"init_from={ckpt}", *extra))
        with pytest.raises(CheckpointMismatchError, match="another strip representation"):
            trainer.fit(cfg)
        assert not list((d / out).glob("checkpoints/*.ckpt"))
    # a ratio model from a ratio one (fine-tuning): every tensor copied, the weights the stored ones
    import yaml

    from lhcml.train.fastcalo import build_generator, init_from_checkpoint

    _, meta = load_generator(ratio_ckpt)
    fresh = build_generator("fastcalo_fm", yaml.safe_load(meta["model_init_yaml"]))
    counts = init_from_checkpoint(fresh, ratio_ckpt)
    assert counts["copied"] == len(fresh.state_dict()) and counts["kept"] == 0
    torch.testing.assert_close(fresh.velocity[0].weight, ratio.velocity[0].weight)
    torch.testing.assert_close(fresh.vars.v_std, ratio.vars.v_std)


def test_lhcml_train_with_ratios_but_no_alignment_exits_2(tmp_path, capsys):
    d = _write_sample(tmp_path)
    assert_train_exits_2("configs/fastcalo/fm_strips_ratio.yaml", _overrides(d, "bad", "model.align_max_shift=0"),
                         "strip_ratios needs align_max_shift > 0", d / "bad", capsys)


# ---- model.strip_first_ratio: the centre row above its neighbours by construction ----


def _vars_first(mode: str) -> CaloFlowVariables:
    return CaloFlowVariables(LAYERS, u0_max=2.0, threshold_kev=1.0, voxel_space="log", strip_ratios=True,
                             strip_grid=(N_ETA, N_PHI), strip_first_ratio=mode).double()  # fmt: skip


def _row_sums(log_shares: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(log_shares.reshape(-1, N_ETA, N_PHI), dim=2)


@pytest.mark.parametrize("mode", ["exp", "softplus"])
def test_first_ratio_transform_known_answers_and_exact_inverse(mode):
    v, free = _vars_first(mode), _vars_first("free")
    g = torch.Generator().manual_seed(4)
    y = torch.log(torch.rand(256, N_ETA * N_PHI, generator=g, dtype=torch.float64).clamp(min=1e-9)) - 3.0
    # the centre row made the strict maximum (as the alignment does; the neighbours >= 1e-3 e-folds lower)
    s = _row_sums(y)
    lift = (s.max(dim=1).values - s[:, CENTRE] + 0.01).clamp(min=0.0)
    y = y.reshape(-1, N_ETA, N_PHI)
    y[:, CENTRE] += lift[:, None]
    y = y.reshape(-1, N_ETA * N_PHI)
    z, zf = v.strip_ratio_encode(y), free.strip_ratio_encode(y)
    torch.testing.assert_close(v.strip_ratio_decode(z), y, rtol=0, atol=1e-10)
    zg, zfg = z.reshape(-1, N_ETA, N_PHI), zf.reshape(-1, N_ETA, N_PHI)
    r = zfg[:, [CENTRE - 1, CENTRE + 1], 1]  # the free first ratios, ln(S_c-+1 / S_c) < 0
    assert torch.all(r < 0)
    want = torch.log(-r) if mode == "exp" else torch.log(torch.expm1(-r))
    torch.testing.assert_close(zg[:, [CENTRE - 1, CENTRE + 1], 1], want)
    # every other variable is the free representation's
    keep = torch.ones(N_ETA, N_PHI, dtype=torch.bool)
    keep[[CENTRE - 1, CENTRE + 1], 1] = False
    torch.testing.assert_close(zg[:, keep], zfg[:, keep], rtol=0, atol=0)


def test_first_ratio_keeps_the_centre_row_above_its_neighbours_on_random_inputs():
    g = torch.Generator().manual_seed(5)
    z = 3.0 * torch.randn(4000, N_ETA * N_PHI, generator=g, dtype=torch.float64)
    z[:5, :] = 60.0  # the variables' cap: finite shares, the neighbours empty
    above = {}
    for mode in ("free", "exp", "softplus"):
        s = _row_sums(_vars_first(mode).strip_ratio_decode(z))
        assert torch.isfinite(s).all() or mode == "free"
        above[mode] = (s[:, CENTRE] > s[:, CENTRE - 1]) & (s[:, CENTRE] > s[:, CENTRE + 1])
    assert bool(above["exp"].all()) and bool(above["softplus"].all())
    assert float(above["free"].float().mean()) < 0.5  # without the option random draws lose it (about a quarter kept)


def test_first_ratio_round_trips_the_voxel_chain_and_off_is_the_old_behaviour():
    e, x = strip_showers(3000, 1)
    old = _vars(True)
    assert "first_ratio_rows" not in old.state_dict()  # "free": no new buffer, older checkpoints load unchanged
    assert _vars(True).strip_first_ratio == "free"
    for mode in ("exp", "softplus"):
        v = CaloFlowVariables(LAYERS, u0_max=2.0, threshold_kev=1.0, voxel_space="log", strip_ratios=True,
                              strip_grid=(N_ETA, N_PHI), strip_first_ratio=mode)  # fmt: skip
        v.fit(e, x, torch.Generator().manual_seed(0))
        x_u, x_v, _ = v.encode(e, x, torch.Generator().manual_seed(1))
        back = v.decode_voxels(x_v, v.decode_layers(x_u, e))
        torch.testing.assert_close(back, x, rtol=1e-3, atol=1e-6)
        torch.testing.assert_close(x_v.std(0), torch.ones(x_v.shape[1]), atol=0.05, rtol=0)


@pytest.mark.parametrize("mode", ["exp", "softplus"])
def test_first_ratio_model_generates_and_both_onnx_graphs_agree(tmp_path, mode):
    from lhcml.export.fastcalo import export_generator
    from lhcml.sim.fastcalo import voxel_binning

    b = voxel_binning("photon")
    torch.manual_seed(0)
    m = _photon_model(strip_first_ratio=mode)
    e, eta, x = random_photon_showers(b.n_voxels)
    m.prepare(e, x, eta=eta)
    m.eval()
    for lean in (False, True):  # onnxruntime agreement with PyTorch asserted inside, for both graphs
        export_generator(m, tmp_path / f"{mode}_{lean}.onnx", binning_file_sha256=b.sha256, particle="photon",
                         binning_xml=b.to_xml(), timing=False, n_check=64, atol=1e-4, lean=lean)  # fmt: skip


def test_first_ratio_bad_values_give_one_clear_message(tmp_path, capsys):
    for bad in ("yes", True, "neg_exp"):
        with pytest.raises(ConfigError, match="strip_first_ratio must be one of free, exp, softplus"):
            _photon_model(strip_first_ratio=bad)
    with pytest.raises(ConfigError, match="strip_first_ratio: exp needs strip_ratios: true"):
        _photon_model(strip_ratios=False, strip_first_ratio="exp")
    d = _write_sample(tmp_path)
    assert_train_exits_2("configs/fastcalo/fm_strips_ratio.yaml", _overrides(d, "bad", "model.strip_first_ratio=cube"),
                         "strip_first_ratio must be one of", d / "bad", capsys)  # fmt: skip


def test_first_ratio_init_from_refused_across_modes_copied_within(tmp_path):
    import yaml

    from lhcml.train.fastcalo import build_generator, init_from_checkpoint, load_generator
    from lhcml.train.protocol import load_trainable_config

    d = _write_sample(tmp_path)
    cfg_path = "configs/fastcalo/fm_strips_ratio.yaml"
    ckpts = {}
    for mode in ("free", "softplus"):
        trainer, cfg = load_trainable_config(cfg_path, _overrides(d, mode, f"model.strip_first_ratio={mode}"))
        ckpts[mode] = trainer.fit(cfg)
    for stored, other in (("free", "softplus"), ("softplus", "exp"), ("softplus", "free")):
        _, meta = load_generator(ckpts[stored])
        init = {**yaml.safe_load(meta["model_init_yaml"]), "strip_first_ratio": other}
        with pytest.raises(CheckpointMismatchError, match="model.strip_first_ratio"):
            init_from_checkpoint(build_generator("fastcalo_fm", init), ckpts[stored])
    trained, meta = load_generator(ckpts["softplus"])
    assert trained.vars.strip_first_ratio == "softplus"
    fresh = build_generator("fastcalo_fm", yaml.safe_load(meta["model_init_yaml"]))
    counts = init_from_checkpoint(fresh, ckpts["softplus"])
    assert counts["copied"] == len(fresh.state_dict()) and counts["kept"] == 0
    torch.testing.assert_close(fresh.velocity[0].weight, trained.velocity[0].weight)
