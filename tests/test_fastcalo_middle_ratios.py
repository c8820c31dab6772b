"""The middle layer generated ring by ring as log-ratios (``model.middle_ratios``,
``configs/fastcalo/fm_strips_ratio_middle.yaml``; issue 15, docs/benchmarks/fastcalo.md "Twentieth version").

The nineteenth version found the low-level classifier's main input in the middle layer's halo (its cells
sorted by energy separate at AUC 0.95): the generated halo cells fluctuate independently. With
``middle_ratios: [n_eta, n_phi]`` the middle (second) layer's log shares are the centre cell's log share
and every other cell's log-ratio to its inner neighbour (one Chebyshev ring closer, on the discrete ray
to the centre):

* the matrices: known answers (parents one ring in, neighbours), ``enc @ dec`` the identity, the
  transform an exact inverse on random log shares, and the whole voxel chain round trip with empty cells;
* option off: no new buffer, the middle variables the plain log shares (the old behaviour);
* a generator drawing every variable independently with the right spread gives halo cells whose
  log-ratios to their inner neighbours spread as the truth's; per-cell variables give spikes;
* the flow-matching model trains, samples, and both ONNX graphs agree with PyTorch (asserted in the export);
* bad values give one ConfigError; ``lhcml train`` exits 2 without a checkpoint; the shipped config trains,
  and ``init_from`` across the representations is refused.
"""

from __future__ import annotations

from pathlib import Path

import _fastcalo_helpers as helpers
import numpy as np
import pytest
import torch
from _fastcalo_helpers import (
    assert_train_exits_2,
    assert_trains_samples_exports,
    photon_fm_model,
    tiny_fm_overrides,
    write_photon_sample,
)

from lhcml.errors import ConfigError
from lhcml.models.fastcalo.flow import CaloFlowVariables, ring_parent, ring_ratio_matrices

G_ETA, G_PHI = 5, 7  # the synthetic middle layer (lhcml's is 7 x 11)
CI, CJ = (G_ETA - 1) // 2, (G_PHI - 1) // 2
LAYERS = [4, G_ETA * G_PHI, 3]
SLOPE = 2.0  # the synthetic middle layer's mean fall-off per cell (the centre cell holds ~60 %)


def _idx(i: int, j: int, n_phi: int = G_PHI) -> int:
    return i * n_phi + j


def test_matrices_known_answers_and_exact_inverse():
    for n_eta, n_phi in ((7, 11), (G_ETA, G_PHI), (3, 3), (1, 5), (4, 6)):
        enc, dec = ring_ratio_matrices(n_eta, n_phi)
        torch.testing.assert_close(enc @ dec, torch.eye(n_eta * n_phi), rtol=0, atol=0)
        ci, cj = (n_eta - 1) // 2, (n_phi - 1) // 2
        for i in range(n_eta):
            for j in range(n_phi):
                di, dj = i - ci, j - cj
                if (di, dj) == (0, 0):
                    continue
                pi, pj = ring_parent(di, dj)
                # a neighbour (8-connected), exactly one ring closer, inside the grid
                assert max(abs(di - pi), abs(dj - pj)) == 1
                assert max(abs(pi), abs(pj)) == max(abs(di), abs(dj)) - 1
                assert 0 <= ci + pi < n_eta and 0 <= cj + pj < n_phi
    # known parents on lhcml's 7 x 11 grid: straight in along an axis, diagonally at the corners
    assert ring_parent(0, 5) == (0, 4) and ring_parent(-3, 0) == (-2, 0) and ring_parent(-3, -5) == (-2, -4)
    assert ring_parent(1, 1) == (0, 0) and ring_parent(3, 1) == (2, 1) and ring_parent(2, -1) == (1, -1)
    v = CaloFlowVariables(LAYERS, voxel_space="log", middle_ratios=[G_ETA, G_PHI]).double()
    y = torch.log(torch.rand(64, G_ETA * G_PHI, dtype=torch.float64).clamp(min=1e-9)) - 3.0
    z = v.middle_ratio_encode(y)
    torch.testing.assert_close(v.middle_ratio_decode(z), y, rtol=0, atol=1e-12)
    torch.testing.assert_close(z[:, _idx(CI, CJ)], y[:, _idx(CI, CJ)])  # the centre: its log share
    torch.testing.assert_close(z[:, _idx(CI, CJ + 3)], y[:, _idx(CI, CJ + 3)] - y[:, _idx(CI, CJ + 2)])
    torch.testing.assert_close(z[:, _idx(0, 0)], y[:, _idx(0, 0)] - y[:, _idx(1, 1)])
    torch.testing.assert_close(z[:, _idx(CI + 1, CJ - 1)], y[:, _idx(CI + 1, CJ - 1)] - y[:, _idx(CI, CJ)])


def halo_showers(n: int, seed: int, p_empty: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic showers ``(E GeV, showers GeV)``: a first layer Dirichlet(30) (4 cells), a middle layer of
    5 x 7 cells falling as ``exp(-slope d)`` with ``d`` the distance to the centre cell, one slope per shower
    (log-normal, spread 0.3) and one factor for all halo cells (log-normal, spread 0.5: a wider shower lifts
    the whole halo, as detailed showers do) and 5 % noise per cell, its corner cells empty in a fraction ``p_empty`` of the showers, a last layer Dirichlet(30)."""
    rng = np.random.default_rng(seed)
    e = np.exp(rng.uniform(np.log(5.0), np.log(100.0), n))
    slope = SLOPE * np.exp(0.3 * rng.standard_normal(n))
    ii, jj = np.meshgrid(np.arange(G_ETA) - CI, np.arange(G_PHI) - CJ, indexing="ij")
    dist = np.hypot(ii, jj).reshape(-1)
    halo = np.exp(0.5 * rng.standard_normal(n))[:, None] ** (dist[None, :] > 0)  # the halo's share
    mid = halo * np.exp(-slope[:, None] * dist[None, :] + 0.05 * rng.standard_normal((n, dist.size)))
    corners = [_idx(0, 0), _idx(0, G_PHI - 1), _idx(G_ETA - 1, 0), _idx(G_ETA - 1, G_PHI - 1)]
    mid[np.ix_(rng.random(n) < p_empty, corners)] = 0.0
    mid /= mid.sum(1, keepdims=True)
    first, last = rng.dirichlet(np.full(4, 30.0), size=n), rng.dirichlet(np.full(3, 30.0), size=n)
    x = np.concatenate([0.3 * e[:, None] * first, 0.6 * e[:, None] * mid, 0.05 * e[:, None] * last], 1)
    return torch.from_numpy(e.astype(np.float32)), torch.from_numpy(x.astype(np.float32))


def _vars(on: bool) -> CaloFlowVariables:
    return CaloFlowVariables(LAYERS, u0_max=2.0, threshold_kev=1.0, voxel_space="log",
                             middle_ratios=[G_ETA, G_PHI] if on else None)  # fmt: skip


def test_round_trip_through_the_voxel_chain_and_option_off_is_the_old_behaviour():
    e, x = halo_showers(3000, 1)
    on, off = _vars(True), _vars(False)
    for v in (on, off):
        v.fit(e, x, torch.Generator().manual_seed(0))
    x_u, x_v, _ = on.encode(e, x, torch.Generator().manual_seed(1))
    back = on.decode_voxels(x_v, on.decode_layers(x_u, e))
    torch.testing.assert_close(back, x, rtol=1e-3, atol=1e-6)  # the empty corners come back empty
    assert float(back[:, 4 + _idx(0, 0)].eq(0).float().mean()) > 0.15
    torch.testing.assert_close(x_v.std(0), torch.ones(x_v.shape[1]), atol=0.05, rtol=0)  # standardised
    # off: no new buffer (older checkpoints load), the middle variables are the plain log shares;
    # on: the same log shares through the ring matrix, the other layers untouched
    assert not any(k.startswith("middle_") for k in off.state_dict()) and "middle_enc" in on.state_dict()
    _, raw_off, e_l = off.raw_variables(e, x, torch.Generator().manual_seed(1))
    _, raw_on, _ = on.raw_variables(e, x, torch.Generator().manual_seed(1))
    mid = slice(4, 4 + G_ETA * G_PHI)
    known = torch.log(x[:, mid].clamp(min=1e-6)) - torch.log(e_l[:, 1:2])
    full = x[:, mid] >= 1e-6
    torch.testing.assert_close(raw_off[:, mid][full], known[full], rtol=0, atol=1e-5)
    torch.testing.assert_close(raw_on[:, mid], raw_off[:, mid] @ on.middle_enc, rtol=0, atol=1e-5)
    torch.testing.assert_close(raw_on[:, :4], raw_off[:, :4])
    torch.testing.assert_close(raw_on[:, -3:], raw_off[:, -3:])


def _parent_ratio_spread(showers: torch.Tensor) -> np.ndarray:
    """Std of ln(E_cell / E_inner neighbour) over the showers for the ring-2 cells of the middle layer."""
    mid = showers[:, 4 : 4 + G_ETA * G_PHI].double().clamp(min=1e-12)
    out = []
    for i in range(G_ETA):
        for j in range(G_PHI):
            di, dj = i - CI, j - CJ
            if max(abs(di), abs(dj)) == 2:
                pi, pj = ring_parent(di, dj)
                out.append(float(torch.log(mid[:, _idx(i, j)] / mid[:, _idx(CI + pi, CJ + pj)]).std()))
    return np.array(out)


def test_independent_errors_give_a_smooth_halo_not_spikes():
    e, x = halo_showers(6000, 2, p_empty=0.0)
    on, off = _vars(True), _vars(False)
    for v in (on, off):
        v.fit(e, x, torch.Generator().manual_seed(0))
    truth = _parent_ratio_spread(x)
    g = torch.Generator().manual_seed(3)
    spread = {}
    for name, v in (("ratio", on), ("plain", off)):
        x_u, x_v, _ = v.encode(e, x, torch.Generator().manual_seed(1))
        z = torch.randn(x_v.shape, generator=g)  # every variable with its (true) spread, drawn independently
        spread[name] = _parent_ratio_spread(v.decode_voxels(z, v.decode_layers(x_u, e)))
    # the truth's neighbour spread is the slope's (0.3 x 2 x the distance step) and the cells' noise: 0.5-0.9
    assert np.all(truth > 0.4) and np.all(truth < 1.0), (truth, spread)
    # ratios: each inner-neighbour ratio drawn with its own (true) spread -> as smooth as the truth
    assert np.all(np.abs(spread["ratio"] / truth - 1.0) < 0.1), (truth, spread)
    # per cell: the halo cells spike independently of their inner neighbours (measured 1.65-2.5 x the truth)
    assert np.all(spread["plain"] > 1.4 * truth) and np.mean(spread["plain"] / truth) > 1.8, (truth, spread)


def _photon_model(**kw):
    return photon_fm_model(**{"middle_ratios": [7, 11], **kw})


def test_flow_matching_with_middle_ratios_trains_samples_and_exports(tmp_path):
    def check(m, b):
        assert m.vars.middle_grid == (7, 11) and m.vars.middle_start == b.layer_sizes[0]

    assert_trains_samples_exports(_photon_model(), tmp_path, "middle", check)


@pytest.mark.parametrize("bad", [True, "yes", [7], [7, 12], [7.0, 11], [0, 77], [7, 11, 1]])
def test_bad_values_give_one_config_error(bad):
    with pytest.raises(ConfigError, match="middle_ratios"):
        _photon_model(middle_ratios=bad)


def test_logit_voxels_or_a_single_layer_are_refused():
    with pytest.raises(ConfigError, match="middle_ratios needs voxel_space: log"):
        CaloFlowVariables(LAYERS, voxel_space="logit", middle_ratios=[G_ETA, G_PHI])
    with pytest.raises(ConfigError, match="does not fit the second layer"):
        CaloFlowVariables([G_ETA * G_PHI], voxel_space="log", middle_ratios=[G_ETA, G_PHI])


def _write_sample(tmp_path: Path) -> Path:
    from lhcml.data.calochallenge import LayerBinning

    layers = (LayerBinning(id=1, kind="cells", name="l0", n_eta=4, n_phi=1, deta=0.003125, dphi=0.098),
              LayerBinning(id=2, kind="cells", name="l1", n_eta=G_ETA, n_phi=G_PHI, deta=0.025, dphi=0.0245),
              LayerBinning(id=3, kind="cells", name="l2", n_eta=3, n_phi=1, deta=0.05, dphi=0.0245))  # fmt: skip
    return write_photon_sample(tmp_path, layers, *halo_showers(96, 5))


CONFIG = "configs/fastcalo/fm_strips_ratio_middle.yaml"


def _overrides(d: Path, out: str, *extra: str) -> list[str]:
    # the tiny sample's first layer has 4 rows of one cell: no strip alignment, so no strip ratios
    return tiny_fm_overrides(d, out, 0, "model.strip_ratios=false", "model.align_n_phi=1",
                             f"model.middle_ratios=[{G_ETA}, {G_PHI}]", *extra)  # fmt: skip


def test_shipped_config_trains_and_init_from_is_refused_across_representations(tmp_path):
    from lhcml.train.fastcalo import load_generator
    from lhcml.train.protocol import load_trainable_config

    d = _write_sample(tmp_path)
    trainer, cfg = load_trainable_config(CONFIG, _overrides(d, "middle"))
    middle_ckpt = trainer.fit(cfg)
    m, _ = load_generator(middle_ckpt)
    assert m.vars.middle_grid == (G_ETA, G_PHI)
    trainer, cfg = load_trainable_config(CONFIG, _overrides(d, "plain", "model.middle_ratios=null"))
    plain_ckpt = trainer.fit(cfg)
    assert not load_generator(plain_ckpt)[0].vars.middle_ratios
    helpers.assert_init_from_refused(CONFIG, [(d / out, _overrides(d, out, f"init_from={ckpt}", *extra))
                                      for out, ckpt, extra in (("a", plain_ckpt, ()),
                                                               ("b", middle_ckpt, ("model.middle_ratios=null",)))],
                             "another middle-layer representation")  # fmt: skip


def test_lhcml_train_with_a_grid_that_does_not_fit_exits_2(tmp_path, capsys):
    d = _write_sample(tmp_path)
    assert_train_exits_2(CONFIG, _overrides(d, "bad", "model.middle_ratios=[7, 11]"),
                         "does not fit the second layer", d / "bad", capsys)  # fmt: skip
