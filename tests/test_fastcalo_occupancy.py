"""A per-cell occupancy variable for the halo (``model.occupancy_layers``,
``configs/fastcalo/fm_strips_ratio_occupancy.yaml``; issue 15, docs/benchmarks/fastcalo.md "Twenty-first version").

The best model's middle layer has 4-5 x the detailed number of 1-5 MeV cells and too few above 20 MeV: its
"empty" state (encoded 1-2 e-folds under the 1 MeV threshold) is blurred into the occupied cells. With
``occupancy_layers: [k, ...]`` every cell of those layers gets an on/off variable ``2 (b + U) - 2`` generated
with the energies, a cell reading "off" is zero, and an empty cell's energy variable is filled near one detailed
spot (16.7 MeV) so that it is unimodal:

* known answers: the bits' ranges, the fill's scale and width, the option off draws the same random numbers
  and gives the same variables as before (no new buffer, no new state column);
* exact round trip: occupied cells come back to float rounding, empty ones as zero although their energy
  variable holds the fill (all bits on: the fill comes back instead);
* the flow-matching model trains, samples and both ONNX graphs agree with PyTorch (asserted in the export);
* ``init_from`` a model without the bits: the widened velocity network computes the stored velocity for the
  old variables when the bits' inputs are zero (their rows and columns freshly initialised); the other direction and other layers are refused;
* bad values give one ConfigError; ``lhcml train`` exits 2 without a checkpoint; the shipped config trains.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _fastcalo_helpers import (
    assert_init_from_refused,
    assert_train_exits_2,
    assert_trains_samples_exports,
    photon_fm_model,
    tiny_fm_overrides,
    write_photon_sample,
)

from lhcml.errors import ConfigError
from lhcml.models.fastcalo.flow import OCCUPANCY_FILL_GEV, OCCUPANCY_FILL_SIGMA, CaloFlowVariables

LAYERS = [4, 6, 3]
MID = slice(4, 10)
THR_GEV = 1e-3


def sparse_showers(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E GeV, showers GeV)`` on :data:`LAYERS`: every layer's first cell holds 1 GeV, the others are
    Gamma(0.5) x 50 MeV and set to exactly zero under 2 MeV (no cell between 0 and the 1 MeV threshold),
    so the middle layer's halo is empty in ~20 % of its cells."""
    rng = np.random.default_rng(seed)
    x = rng.gamma(0.5, 0.05, (n, sum(LAYERS)))
    x[x < 0.002] = 0.0
    for start in (0, 4, 10):
        x[:, start] += 1.0
    x = torch.tensor(x, dtype=torch.float32)
    return x.sum(1) * 1.1, x


def _vars(layers: list[int] | None) -> CaloFlowVariables:
    return CaloFlowVariables(LAYERS, u0_max=2.0, threshold_kev=1e3 * THR_GEV * 1e3, voxel_space="log",
                             occupancy_layers=layers)  # fmt: skip


def test_known_answers_and_option_off_is_the_old_behaviour():
    e, x = sparse_showers(4000, 0)
    on, off = _vars([1]), _vars(None)
    assert on.n_occupancy == 6 and off.n_occupancy == 0
    assert "occ_select" in on.state_dict() and not any(k.startswith("occ") for k in off.state_dict())
    # the bits: 1 at or above the threshold in [0, 2), 0 below in [-2, 0), uniform inside
    o = on.occupancy_encode(x, torch.Generator().manual_seed(1))
    full = x[:, MID] >= THR_GEV
    assert 0.1 < float((~full).float().mean()) < 0.4
    assert bool(torch.all((o >= 0) == full)) and float(o.min()) >= -2.0 and float(o.max()) < 2.0
    assert abs(float(o[full].mean()) - 1.0) < 0.02 and abs(float(o[~full].mean()) + 1.0) < 0.03
    # the energy variables: the other layers as without the option; the middle layer's empty cells hold the
    # fill, ln(OCCUPANCY_FILL_GEV) + OCCUPANCY_FILL_SIGMA z - ln E_layer (mean and width known)
    _, v_on, e_l = on.raw_variables(e, x, torch.Generator().manual_seed(2))
    _, v_off, _ = off.raw_variables(e, x, torch.Generator().manual_seed(2))
    torch.testing.assert_close(v_on[:, :4], v_off[:, :4])
    torch.testing.assert_close(v_on[:, 10:], v_off[:, 10:])
    torch.testing.assert_close(v_on[:, MID][full], v_off[:, MID][full])
    fill = (v_on[:, MID] + torch.log(e_l[:, 1:2]))[~full]
    assert abs(float(fill.mean()) - math.log(OCCUPANCY_FILL_GEV)) < 0.03
    assert abs(float(fill.std()) - OCCUPANCY_FILL_SIGMA) < 0.03
    # off: the old encoding of an empty cell, one to two e-folds under the threshold, from the same draws
    old = (v_off[:, MID] + torch.log(e_l[:, 1:2]))[~full] - math.log(THR_GEV)
    assert float(old.max()) <= -1.0 + 1e-5 and float(old.min()) >= -2.0 - 1e-5


def test_exact_round_trip_and_the_bits_decide():
    e, x = sparse_showers(2000, 1)
    v = _vars([1])
    v.fit(e, x, torch.Generator().manual_seed(0))
    x_u, x_v, _ = v.encode(e, x, torch.Generator().manual_seed(1))
    o = v.occupancy_encode(x, torch.Generator().manual_seed(2))
    e_layers = v.decode_layers(x_u, e)
    back = v.decode_voxels(x_v, e_layers, occupancy=o)
    torch.testing.assert_close(back, x, rtol=1e-5, atol=1e-6)
    empty = x[:, MID] == 0
    assert bool(torch.all(back[:, MID][empty] == 0))
    # all bits on: the filled empty cells come back as cells of ~ the fill's size (a fill under the 1 MeV
    # threshold, 0.1 % of them: 3.1 sigma below 16.7 MeV, still reads zero), the layer renormalised
    lit = v.decode_voxels(x_v, e_layers, occupancy=torch.ones_like(o))
    assert float((lit[:, MID][empty] > 0).float().mean()) > 0.99
    assert 0.3 < float(lit[:, MID][empty].median()) / OCCUPANCY_FILL_GEV < 3.0
    torch.testing.assert_close(lit[:, MID].sum(1), x[:, MID].sum(1), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="needs the occupancy"):
        v.decode_voxels(x_v, e_layers)


def test_flow_matching_with_occupancy_trains_samples_and_exports(tmp_path):
    def check(m, b):
        assert m.n_occupancy == b.layer_sizes[1] == 77
        assert m.noise_dim == photon_fm_model().noise_dim + 77
        # the per-bit term s(t) x_bit (zero at the start): non-zero here, so both graphs must carry it
        assert float(m.occ_skip.weight.abs().sum()) == 0.0
        with torch.no_grad():
            m.occ_skip.weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(4))
            m.occ_skip.bias.fill_(-0.5)

    assert_trains_samples_exports(photon_fm_model(occupancy_layers=[1]), tmp_path, "occ", check)


@pytest.mark.parametrize("bad", [True, 1, "1", [], [5], [1, 1], [1.0], [True], [-1]])
def test_bad_values_give_one_config_error(bad):
    with pytest.raises(ConfigError, match="occupancy_layers"):
        photon_fm_model(occupancy_layers=bad)


def test_logit_voxels_are_refused():
    with pytest.raises(ConfigError, match="occupancy_layers needs voxel_space: log"):
        CaloFlowVariables(LAYERS, voxel_space="logit", occupancy_layers=[1])


def _write_sample(tmp_path: Path) -> Path:
    from lhcml.data.calochallenge import LayerBinning

    layers = (LayerBinning(id=1, kind="cells", name="l0", n_eta=4, n_phi=1, deta=0.003125, dphi=0.098),
              LayerBinning(id=2, kind="cells", name="l1", n_eta=2, n_phi=3, deta=0.025, dphi=0.0245),
              LayerBinning(id=3, kind="cells", name="l2", n_eta=3, n_phi=1, deta=0.05, dphi=0.0245))  # fmt: skip
    return write_photon_sample(tmp_path, layers, *sparse_showers(96, 5))


CONFIG = "configs/fastcalo/fm_strips_ratio_occupancy.yaml"


def _overrides(d: Path, out: str, *extra: str) -> list[str]:
    # the tiny sample's first layer has 4 rows of one cell: no strip alignment, so no strip ratios
    return tiny_fm_overrides(d, out, 0, "model.strip_ratios=false", "model.align_n_phi=1", "init_from=null",
                             *extra)  # fmt: skip


def test_shipped_config_trains_and_init_from_widens_one_way_only(tmp_path):
    from lhcml.train.fastcalo import load_generator
    from lhcml.train.protocol import load_trainable_config

    d = _write_sample(tmp_path)
    trainer, cfg = load_trainable_config(CONFIG, _overrides(d, "plain", "model.occupancy_layers=null"))
    plain_ckpt = trainer.fit(cfg)
    plain = load_generator(plain_ckpt)[0].eval()
    # the widened network before training: the stored velocity for the old variables
    import yaml

    from lhcml.models.fastcalo.fm import CaloFlowMatching
    from lhcml.train.checkpoint import read_checkpoint
    from lhcml.train.fastcalo import init_from_checkpoint

    init = yaml.safe_load(read_checkpoint(plain_ckpt)["lhcml"]["model_init_yaml"])
    occ_model = CaloFlowMatching(**{**init, "occupancy_layers": [1]})
    fresh = {k: v.clone() for k, v in occ_model.state_dict().items()}
    counts = init_from_checkpoint(occ_model, plain_ckpt)
    assert counts["copied"] > 0
    g = torch.Generator().manual_seed(3)
    n, d_old = 64, plain.noise_dim
    x = torch.randn(n, occ_model.noise_dim, generator=g)
    x[:, d_old:] = 0.0  # the bits' inputs at zero: the stored velocity for the old variables
    t = torch.rand(n, 1, generator=g)
    c = torch.rand(n, plain.cond_dim, generator=g)
    with torch.no_grad():
        v_new, v_old = occ_model.v(x, t, c), plain.v(x[:, :d_old], t, c)
    torch.testing.assert_close(v_new[:, :d_old], v_old, rtol=1e-5, atol=1e-6)
    # the bits' rows and columns: this model's own initialisation (the columns scaled), not zeros
    ws = [k for k in fresh if k.startswith("velocity.") and k.endswith(".weight")]
    new = occ_model.state_dict()
    torch.testing.assert_close(new[ws[-1]][d_old:], fresh[ws[-1]][d_old:], rtol=0, atol=0)
    cols = new[ws[0]][:, d_old : occ_model.noise_dim]
    ratio = cols / fresh[ws[0]][:, d_old : occ_model.noise_dim]
    assert float(cols.abs().mean()) > 0 and float(ratio.std()) < 1e-5  # one scale for all
    x[:, d_old:] = 1.0
    with torch.no_grad():
        assert float((occ_model.v(x, t, c)[:, :d_old] - v_old).abs().max()) > 0  # the bits are seen
    # the per-bit term s(t) x_bit starts at zero, and adds exactly s(t) x_bit to the bits' velocity
    assert float(occ_model.occ_skip.weight.abs().sum() + occ_model.occ_skip.bias.abs().sum()) == 0.0
    with torch.no_grad():
        base = occ_model.v(x, t, c)
        occ_model.occ_skip.bias.fill_(-1.0)
        torch.testing.assert_close(occ_model.v(x, t, c)[:, d_old:], base[:, d_old:] - x[:, d_old:])
        occ_model.occ_skip.bias.zero_()
    trainer, cfg = load_trainable_config(CONFIG, _overrides(d, "occ", f"init_from={plain_ckpt}"))
    occ_ckpt = trainer.fit(cfg)
    m = load_generator(occ_ckpt)[0]
    assert m.n_occupancy == 6
    with torch.no_grad():
        s = m.generate(torch.full((16,), 20.0), generator=torch.Generator().manual_seed(0),
                       eta=torch.full((16,), 0.5), phi=torch.zeros(16))  # fmt: skip
    assert s.shape == (16, 13) and bool(torch.all(s >= 0))
    assert_init_from_refused(CONFIG, [(d / out, _overrides(d, out, f"init_from={occ_ckpt}", extra))
                                      for out, extra in (("a", "model.occupancy_layers=null"),
                                                         ("b", "model.occupancy_layers=[0]"))], "occupancy_layers")


def test_lhcml_train_with_a_layer_that_does_not_exist_exits_2(tmp_path, capsys):
    d = _write_sample(tmp_path)
    assert_train_exits_2(CONFIG, _overrides(d, "bad", "model.occupancy_layers=[3]"),
                         "occupancy_layers must be", d / "bad", capsys)  # fmt: skip


# ---- model.occupancy_dequant_width: the bits' dequantisation width (docs/benchmarks/fastcalo.md, h23a) ----


def _vars_w(width: float) -> CaloFlowVariables:
    return CaloFlowVariables(LAYERS, u0_max=2.0, threshold_kev=1e3 * THR_GEV * 1e3, voxel_space="log",
                             occupancy_layers=[1], occupancy_dequant_width=width)  # fmt: skip


def test_default_width_is_the_original_dequantisation_bit_for_bit():
    _, x = sparse_showers(3000, 3)
    b = (x[:, MID] >= THR_GEV).to(x.dtype)
    u = torch.rand(b.shape, generator=torch.Generator().manual_seed(5), dtype=x.dtype)
    old = 2.0 * (b + u) - 2.0  # the twenty-first version's formula, the same draws
    for v in (_vars([1]), _vars_w(2.0), _vars_w(2)):
        assert v.occupancy_dequant_width == 2.0
        assert torch.equal(v.occupancy_encode(x, torch.Generator().manual_seed(5)), old)


@pytest.mark.parametrize("width", [0.25, 1.0])
def test_narrow_bits_lie_in_their_intervals_and_decode_at_zero(width):
    e, x = sparse_showers(4000, 4)
    v = _vars_w(width)
    o = v.occupancy_encode(x, torch.Generator().manual_seed(6))
    full = x[:, MID] >= THR_GEV
    assert 0.1 < float((~full).float().mean()) < 0.4
    h = width / 2
    assert float(o[full].min()) >= 1.0 - h and float(o[full].max()) < 1.0 + h
    assert float(o[~full].min()) >= -1.0 - h and float(o[~full].max()) < -1.0 + h
    # uniform inside: the known mean and width w / sqrt(12) (not a constant, not the wide noise)
    assert abs(float(o[full].mean()) - 1.0) < 0.01 * width + 1e-3
    assert abs(float(o[full].std()) - width / math.sqrt(12.0)) < 0.02 * width
    # the bits round-trip: read empty exactly where the cell was empty, and the voxels come back
    torch.testing.assert_close(v.occupancy_off(o)[:, MID], (~full).to(x.dtype))
    v.fit(e, x, torch.Generator().manual_seed(0))
    x_u, x_v, _ = v.encode(e, x, torch.Generator().manual_seed(1))
    back = v.decode_voxels(x_v, v.decode_layers(x_u, e), occupancy=o)
    torch.testing.assert_close(back, x, rtol=1e-5, atol=1e-6)
    assert bool(torch.all(back[:, MID][~full] == 0))


def test_narrow_bits_train_sample_and_both_onnx_graphs_agree(tmp_path):
    def check(m, b):
        assert m.vars.occupancy_dequant_width == 0.25 and m.n_occupancy == 77
        with torch.no_grad():  # a non-zero per-bit term, so the graphs' bits are not the network's alone
            m.occ_skip.weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(7))

    assert_trains_samples_exports(photon_fm_model(occupancy_layers=[1], occupancy_dequant_width=0.25), tmp_path,
                                  "occnarrow", check)  # fmt: skip


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, 2.5, float("nan"), float("inf"), True, "0.25", None, [0.25]])
def test_bad_width_gives_one_config_error(bad):
    with pytest.raises(ConfigError, match="occupancy_dequant_width must be a number with 0 < w <= 2"):
        photon_fm_model(occupancy_layers=[1], occupancy_dequant_width=bad)


def test_width_without_bits_is_refused_and_the_default_without_bits_is_accepted():
    with pytest.raises(ConfigError, match="occupancy_dequant_width needs occupancy_layers"):
        photon_fm_model(occupancy_dequant_width=0.25)
    assert photon_fm_model(occupancy_dequant_width=2.0).n_occupancy == 0


def test_lhcml_train_with_a_bad_width_exits_2(tmp_path, capsys):
    d = _write_sample(tmp_path)
    assert_train_exits_2(CONFIG, _overrides(d, "badw", "model.occupancy_dequant_width=3.0"),
                         "occupancy_dequant_width must be", d / "badw", capsys)  # fmt: skip


NARROW_CONFIG = "configs/fastcalo/fm_strips_ratio_occupancy_narrow.yaml"


def test_shipped_narrow_config_trains_with_narrow_bits(tmp_path):
    from lhcml.train.fastcalo import load_generator
    from lhcml.train.protocol import load_trainable_config

    d = _write_sample(tmp_path)
    trainer, cfg = load_trainable_config(NARROW_CONFIG, _overrides(d, "narrow"))
    m = load_generator(trainer.fit(cfg))[0]
    assert m.n_occupancy == 6 and m.vars.occupancy_dequant_width == 0.25
    _, x = sparse_showers(200, 8)
    o = m.vars.occupancy_encode(x)
    assert float(o.abs().min()) >= 0.875 and float(o.abs().max()) < 1.125  # every bit 1 +- 0.125 or -1 +- 0.125
    with torch.no_grad():
        s = m.generate(torch.full((16,), 20.0), generator=torch.Generator().manual_seed(0),
                       eta=torch.full((16,), 0.5), phi=torch.zeros(16))  # fmt: skip
    assert s.shape == (16, 13) and bool(torch.all(s >= 0))
