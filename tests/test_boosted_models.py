"""Constituent taggers and the jet-image CNN: invariances, masking, IRC safety, images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _boosted_fixtures import FLOW_VARS, _one_torch_thread, boosted_mock_tables  # noqa: F401

from lhcml.errors import ConfigError
from lhcml.models.constituents import knn_indices, pair_features, pair_features_relative
from lhcml.models.images import jet_images_torch
from lhcml.models.registry import build_model, list_models

SMALL = {
    "pfn": dict(phi_sizes=[32, 32], f_sizes=[32]),
    "efn": dict(phi_sizes=[32, 32], f_sizes=[32]),
    "particlenet": dict(k=4, conv_params=[[16, 16], [24, 24]], fc_sizes=[32]),
    "part": dict(embed_dims=[32, 32], pair_embed_dims=[16], num_heads=4, num_layers=2, num_cls_layers=1),
    "lola": dict(n_constituents=12, n_combinations=4),
    "jet_image_cnn": dict(n_pixels=16, conv_blocks=[[4], [4]], fc_sizes=[16]),
}
# raw-feature normalisation as the trainer would set it (keeps activations O(1))
NORM = {"pt": (3e4, 3e4), "energy": (5e4, 5e4), "eta": (0.0, 1.0), "phi": (0.0, 1.8)}


def _model(name: str, n_classes: int = 4):
    torch.manual_seed(0)
    m = build_model(name, n_classes, {"flow": len(FLOW_VARS)}, **SMALL[name])
    m.configure_inputs({"flow": FLOW_VARS})
    mean = [NORM.get(v, (0.0, 1.0))[0] for v in FLOW_VARS]
    std = [NORM.get(v, (0.0, 1.0))[1] for v in FLOW_VARS]
    m.set_normalisation("flow", mean, std)
    return m.eval()


def _batch(b: int = 5, n: int = 30, seed: int = 0):
    g = np.random.default_rng(seed)
    pt = g.exponential(30e3, (b, n)) + 500
    deta, dphi = g.normal(0, 0.25, (b, n)), g.normal(0, 0.25, (b, n))
    eta, phi = deta + 0.7, dphi - 2.0
    e = pt * np.cosh(eta)
    charge = g.integers(-1, 2, (b, n))
    x = np.stack([pt, e, eta, phi, deta, dphi, charge, charge != 0], -1).astype(np.float32)
    valid = np.arange(n)[None, :] < np.r_[n, g.integers(1, n, b - 1)][:, None]
    return torch.from_numpy(x), torch.from_numpy(valid)


def test_registered():
    assert {"pfn", "efn", "particlenet", "part", "lola", "jet_image_cnn"} <= set(list_models())


@pytest.mark.parametrize("name", list(SMALL))
def test_permutation_and_padding_invariance(name):
    m = _model(name)
    x, valid = _batch()
    with torch.no_grad():
        ref = m({"flow": x, "flow_valid": valid})["logits"]
        assert ref.shape == (5, 4) and torch.isfinite(ref).all()
        perm = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(1))
        out = m({"flow": x[:, perm], "flow_valid": valid[:, perm]})["logits"]
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
        junk = x.clone()
        junk[~valid] = float("nan")
        out = m({"flow": junk, "flow_valid": valid})["logits"]
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        # more padding slots change nothing either
        x_long = torch.cat([x, torch.full((5, 9, x.shape[2]), 7.0)], dim=1)
        v_long = torch.cat([valid, torch.zeros(5, 9, dtype=torch.bool)], dim=1)
        torch.testing.assert_close(m({"flow": x_long, "flow_valid": v_long})["logits"], ref, rtol=1e-5, atol=1e-5)
    # the outputs do depend on the real constituents
    x2 = x.clone()
    x2[:, 0, 0] *= 3
    with torch.no_grad():
        assert not torch.allclose(m({"flow": x2, "flow_valid": valid})["logits"], ref)


def test_knn_never_selects_padding_or_self():
    coords = torch.tensor([[[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [0.01, 0.0], [0.2, 0.0]]])
    valid = torch.tensor([[True, True, True, False, True]])  # slot 3 is padding right next to 0
    idx, ok = knn_indices(coords, valid, k=6)
    for i in range(5):
        nbrs = set(idx[0, i][ok[0, i]].tolist())
        if not valid[0, i]:
            assert nbrs == set()
            continue
        assert 3 not in nbrs and i not in nbrs
        assert nbrs == {j for j in range(5) if valid[0, j] and j != i}
    # nearest neighbour of point 0 is point 1 (padding at 0.01 ignored)
    assert idx[0, 0, 0].item() == 1


def _tied_jets(b: int = 6, n_sites: int = 9, per_site: int = 4, seed: int = 3):
    """Jets whose constituents sit in groups at exactly identical (Δη, Δφ), with different pT."""
    g = np.random.default_rng(seed)
    n = n_sites * per_site
    sites = g.normal(0, 0.2, (b, n_sites, 2)).astype(np.float32)
    deta, dphi = (np.repeat(sites[..., i], per_site, axis=1) for i in (0, 1))
    pt = (g.exponential(20e3, (b, n)) + 500).astype(np.float32)
    eta, phi = deta + 0.7, dphi - 2.0
    e = pt * np.cosh(eta)
    charge = g.integers(-1, 2, (b, n))
    x = np.stack([pt, e, eta, phi, deta, dphi, charge, charge != 0], -1).astype(np.float32)
    return torch.from_numpy(x), torch.ones(b, n, dtype=torch.bool)


@pytest.mark.parametrize("name", ["particlenet", "part"])
def test_invariance_with_identical_coordinates(name):
    """Equidistant neighbours (constituents at identical Δη, Δφ) are chosen by content, not slot:
    the scores do not change under a permutation of the constituents or with extra padding."""
    m = _model(name)
    x, valid = _tied_jets()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        ref = m({"flow": x, "flow_valid": valid})["logits"]
        for _ in range(3):
            perm = torch.randperm(x.shape[1], generator=g)
            out = m({"flow": x[:, perm], "flow_valid": valid[:, perm]})["logits"]
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        # padding slots interleaved with the real constituents and appended after them
        n_pad = 13
        x_long = torch.cat([x, torch.full((x.shape[0], n_pad, x.shape[2]), 7.0)], dim=1)
        v_long = torch.cat([valid, torch.zeros(x.shape[0], n_pad, dtype=torch.bool)], dim=1)
        perm = torch.randperm(x_long.shape[1], generator=g)
        out = m({"flow": x_long[:, perm], "flow_valid": v_long[:, perm]})["logits"]
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_knn_tie_break_follows_key():
    # points 1, 2, 3 are equidistant from point 0; the key, not the slot, picks the neighbour
    coords = torch.tensor([[[0.0, 0.0], [0.1, 0.0], [0.1, 0.0], [0.1, 0.0], [0.5, 0.0]]])
    valid = torch.ones(1, 5, dtype=torch.bool)
    for key, best in (([0.0, 3.0, 1.0, 2.0, 0.0], 2), ([0.0, 1.0, 3.0, 2.0, 0.0], 1), ([0.0, 2.0, 3.0, 1.0, 0.0], 3)):
        idx, ok = knn_indices(coords, valid, k=1, key=torch.tensor([key]))
        assert ok[0, 0, 0] and idx[0, 0, 0].item() == best


def test_relative_pair_features_match_four_vectors_for_massless_constituents():
    # ParT without absolute η, φ: pair features from Δη, Δφ equal those of the true four-vectors
    g = np.random.default_rng(5)
    pt = torch.from_numpy(g.exponential(20.0, (3, 12)) + 0.5).float()
    deta, dphi = (torch.from_numpy(g.normal(0, 0.3, (3, 12))).float() for _ in range(2))
    jet_eta, jet_phi = 1.3, 3.0  # jet axis near φ = π: the Δφ wrap matters
    eta, phi = deta + jet_eta, torch.remainder(dphi + jet_phi + math.pi, 2 * math.pi) - math.pi
    e = pt * torch.cosh(eta)
    valid = torch.ones(3, 12, dtype=torch.bool)
    valid[1, 9:] = False
    ref = pair_features(pt, eta, phi, e, valid)
    rel = pair_features_relative(pt, deta, dphi, valid)
    torch.testing.assert_close(rel, ref, rtol=0, atol=2e-3)  # m² of the massless E = pT cosh η, float32
    assert (rel[1, :, 9:] == 0).all()


def test_part_pair_only_ignores_jet_direction():
    # with eta, phi only in the pair features, a rotation about the beam axis changes nothing
    torch.manual_seed(0)
    m = build_model("part", 3, {"flow": len(FLOW_VARS)}, **SMALL["part"], pair_only=["eta", "phi"])
    m.configure_inputs({"flow": FLOW_VARS})
    m.eval()
    x, valid = _batch()
    rot = x.clone()
    i = FLOW_VARS.index("phi")
    rot[..., i] = torch.remainder(rot[..., i] + 1.0 + math.pi, 2 * math.pi) - math.pi
    with torch.no_grad():
        ref = m({"flow": x, "flow_valid": valid})["logits"]
        torch.testing.assert_close(m({"flow": rot, "flow_valid": valid})["logits"], ref, rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="pair_only"):
        build_model("part", 3, {"flow": 4}, pair_only=["eta"]).configure_inputs({"flow": ["pt", "energy", "deta", "dphi"]})


def test_efn_is_irc_safe():
    m = _model("efn")
    x, valid = _batch(b=2, n=10)
    x[:, :, 0] = x[:, :, 0] / 10  # keep inputs moderate
    with torch.no_grad():
        ref = m({"flow": x, "flow_valid": valid})["logits"]
        # collinear split of constituent 0 into two halves
        split = torch.cat([x, x[:, :1].clone()], dim=1)
        split[:, 0, 0] /= 2
        split[:, -1, 0] /= 2
        v2 = torch.cat([valid, torch.ones(2, 1, dtype=torch.bool)], dim=1)
        torch.testing.assert_close(m({"flow": split, "flow_valid": v2})["logits"], ref, rtol=1e-5, atol=1e-5)
        # an infinitely soft extra particle changes nothing
        soft = torch.cat([x, x[:, :1].clone()], dim=1)
        soft[:, -1, 0] = 0.0
        soft[:, -1, 4:6] = 0.5
        torch.testing.assert_close(m({"flow": soft, "flow_valid": v2})["logits"], ref, rtol=1e-5, atol=1e-5)


def test_lola_fewer_constituents_than_n():
    m = _model("lola")
    x, valid = _batch(b=3, n=5)
    with torch.no_grad():
        out = m({"flow": x, "flow_valid": valid})["logits"]
    assert out.shape == (3, 4) and torch.isfinite(out).all()


def test_missing_kinematic_variable():
    m = build_model("particlenet", 2, {"flow": 3}, **SMALL["particlenet"])
    with pytest.raises(ConfigError, match="deta"):
        m.configure_inputs({"flow": ["pt", "energy", "dphi"]})
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("particle_net", 2, {"flow": 3})


def _rotate(deta, dphi, angle, shift):
    c, s = math.cos(angle), math.sin(angle)
    return c * deta - s * dphi + shift[0], s * deta + c * dphi + shift[1]


def test_jet_image_preprocessing_invariances():
    x, valid = _batch(b=4, n=25, seed=3)
    pt, deta, dphi = x[..., 0].double(), x[..., 4].double(), x[..., 5].double()
    img = jet_images_torch(pt, deta, dphi, valid, n_pixels=32, half_width=1.2)
    for angle, shift in ((0.7, (0.3, -0.2)), (2.5, (-0.1, 0.4)), (math.pi, (0.0, 0.0))):
        de, dp = _rotate(deta, dphi, angle, shift)
        torch.testing.assert_close(jet_images_torch(pt, de, dp, valid, 32, 1.2), img)
    # mirror images give the same image (flip convention)
    torch.testing.assert_close(jet_images_torch(pt, -deta, dphi, valid, 32, 1.2), img)
    assert torch.allclose(img.sum(dim=(1, 2, 3))[valid.sum(1) > 0], torch.ones(4, dtype=img.dtype), atol=0.05)
    im = img[:, 0]
    cols = torch.arange(32, dtype=im.dtype) - 15.5  # pixel centres: Δη' (columns), Δφ' (rows)
    right = (im * (cols > 0)).sum((1, 2)) >= (im * (cols < 0)).sum((1, 2))
    up = (im * (cols[:, None] > 0)).sum((1, 2)) >= (im * (cols[:, None] < 0)).sum((1, 2))
    assert right.all() and up.all()
    # principal axis vertical: the spread along Δφ' (rows) exceeds the spread along Δη'
    var_rows = (im * cols[:, None] ** 2).sum((1, 2))
    var_cols = (im * cols[None, :] ** 2).sum((1, 2))
    assert (var_rows > var_cols).all()


def test_numpy_images_match(boosted_mock_tables):  # noqa: F811
    from lhcml.tasks.boosted.images import average_images, jet_images

    flow = boosted_mock_tables["flow"][:50]
    imgs = jet_images(flow, n_pixels=20, half_width=1.0)
    assert imgs.shape == (50, 20, 20)
    np.testing.assert_allclose(imgs.sum((1, 2)), 1.0, atol=0.02)
    avg = average_images(imgs, boosted_mock_tables["jets"]["R10TruthLabel"][:50])
    assert set(avg) <= {0, 1, 2, 3}


def test_lola_on_relative_coordinates_ignores_the_jet_rapidity():
    # without absolute eta/phi, LoLa's four-vectors are massless in the frame boosted to the jet
    # axis (E = pT cosh(deta)), so moving the whole jet in eta (which changes the measured E of
    # every constituent) changes nothing; with the measured E they would be inconsistent
    rel = ["pt", "energy", "deta", "dphi", "charge", "isChargedHadron"]
    torch.manual_seed(0)
    m = build_model("lola", 3, {"flow": len(rel)}, **SMALL["lola"])
    m.configure_inputs({"flow": rel})
    m.set_normalisation("flow", [NORM.get(v, (0.0, 1.0))[0] for v in rel], [NORM.get(v, (0.0, 1.0))[1] for v in rel])
    m.eval()
    x, valid = _batch()
    keep = [FLOW_VARS.index(v) for v in rel]
    central, forward = x[..., keep].clone(), x[..., keep].clone()
    deta = central[..., rel.index("deta")]
    forward[..., rel.index("energy")] = central[..., 0] * torch.cosh(deta + 1.8)  # jet at eta 1.8 + ...
    with torch.no_grad():
        a = m({"flow": central, "flow_valid": valid})["logits"]
        b = m({"flow": forward, "flow_valid": valid})["logits"]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_attention_helper_equals_torch_multihead_attention():
    """The one attention implementation (GN, ParT) equals nn.MultiheadAttention with the same
    weights: self-attention with and without key padding, and cross-attention (ParT's class token)."""
    from lhcml.models.layers import MultiheadAttention

    torch.manual_seed(3)
    d, h = 16, 4
    ours, ref = MultiheadAttention(d, h).eval(), torch.nn.MultiheadAttention(d, h, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.qkv.weight)
        ref.in_proj_bias.copy_(ours.qkv.bias)
        ref.out_proj.weight.copy_(ours.out.weight)
        ref.out_proj.bias.copy_(ours.out.bias)
        x = torch.randn(3, 7, d)
        torch.testing.assert_close(ours(x), ref(x, x, x, need_weights=False)[0], rtol=1e-5, atol=1e-5)
        valid = torch.arange(7)[None] < torch.tensor([[7], [4], [1]])
        want = ref(x, x, x, key_padding_mask=~valid, need_weights=False)[0]
        # (padded query slots are zeroed before the projection: compare the real ones)
        torch.testing.assert_close(ours(x, valid)[valid], want[valid], rtol=1e-5, atol=1e-5)
        q = torch.randn(3, 1, d)
        want = ref(q, x, x, key_padding_mask=~valid, need_weights=False)[0]
        torch.testing.assert_close(ours(q, valid, context=x), want, rtol=1e-5, atol=1e-5)
        # an additive bias of -inf on a key is the same as masking it
        bias = torch.zeros(3, 1, 7, 7)
        bias[..., 5:] = -1e9
        first5 = torch.arange(7)[None].expand(3, -1) < 5
        torch.testing.assert_close(ours(x, bias=bias)[:, :5], ours(x, valid=first5)[:, :5])


def test_attention_masked_token_cannot_influence_the_others():
    from lhcml.models.layers import MultiheadAttention

    torch.manual_seed(4)
    att = MultiheadAttention(8, 2).eval()
    x = torch.randn(2, 6, 8)
    valid = torch.tensor([[True] * 4 + [False] * 2, [True] + [False] * 5])
    bias = torch.randn(2, 2, 6, 6)
    with torch.no_grad():
        ref = att(x, valid, bias=bias)
        junk = x.clone()
        junk[~valid] = float("nan")
        junk_bias = bias.clone()
        junk_bias[..., 4:] = 1e4  # a huge bias towards the padded keys changes nothing either
        out = att(junk, valid, bias=junk_bias)
        torch.testing.assert_close(out[valid], ref[valid])
        assert torch.isfinite(out).all()
        # a real token does influence the others
        x2 = x.clone()
        x2[0, 2] += 1.0
        assert not torch.allclose(att(x2, valid, bias=bias)[0, 0], ref[0, 0])
        # no valid key at all (an empty jet): zero attention output (the output bias only)
        empty = att(x, torch.zeros(2, 6, dtype=torch.bool))
        torch.testing.assert_close(empty, att.out.bias.expand_as(empty))


def test_part_training_statistics_ignore_padding():
    """ParT's input and pair BatchNorms see only real constituents in training: extra padding
    slots change neither the training-mode outputs nor the running statistics."""
    x, valid = _batch()
    outs = []
    for extra in (0, 9):
        torch.manual_seed(0)
        m = build_model("part", 2, {"flow": len(FLOW_VARS)}, **(SMALL["part"] | {"dropout": 0.0}))
        m.configure_inputs({"flow": FLOW_VARS})
        m.train()
        xx = torch.cat([x, torch.full((5, extra, x.shape[2]), 3.0)], dim=1)
        vv = torch.cat([valid, torch.zeros(5, extra, dtype=torch.bool)], dim=1)
        outs.append((m({"flow": xx, "flow_valid": vv})["logits"].detach(), m.input_bn.running_mean.clone()))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs[0][1], outs[1][1])


def test_constituents_module_keeps_the_old_import_path():
    from lhcml.models import constituents, deepsets, lola, part, particlenet

    assert constituents.ParticleTransformer is part.ParticleTransformer
    assert constituents.ParticleNet is particlenet.ParticleNet
    assert constituents.PFN is deepsets.PFN and constituents.LoLa is lola.LoLa


@pytest.mark.parametrize("mode", ["zero", "drop"])
def test_edgeconv_missing_neighbours(mode):
    """A jet with fewer than k + 1 constituents: ``zero`` (as published) averages the real
    neighbours' edge outputs and k - (n - 1) zero-feature neighbours over k; ``drop`` only the
    real ones. Neither depends on the padding slots."""
    from lhcml.models.particlenet import EdgeConvBlock

    torch.manual_seed(2)
    k, n = 5, 3
    blk = EdgeConvBlock(k, 4, [6], zero_missing=mode == "zero").eval()
    x = torch.randn(1, n, 4)
    coords = torch.randn(1, n, 2)
    valid = torch.ones(1, n, dtype=torch.bool)
    with torch.no_grad():
        out = blk(coords, x, valid)
        pad = 4
        out_pad = blk(torch.cat([coords, torch.zeros(1, pad, 2)], 1), torch.cat([x, torch.ones(1, pad, 4)], 1),
                      torch.cat([valid, torch.zeros(1, pad, dtype=torch.bool)], 1))  # fmt: skip
        torch.testing.assert_close(out_pad[:, :n], out)
        i = 0
        xi = x[0, i]
        others = [x[0, j] for j in range(n) if j != i]

        def h(nb):
            e = torch.cat([xi, nb - xi]).reshape(1, 8, 1, 1)
            return blk.edge(e).flatten()

        hs = [h(nb) for nb in others]
        if mode == "zero":
            hs += [h(torch.zeros(4))] * (k - len(others))
        agg = torch.stack(hs).mean(0)
        sc = blk.shortcut(x.transpose(1, 2)).transpose(1, 2)[0, i]
        torch.testing.assert_close(out[0, i], torch.relu(sc + agg), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="missing_neighbours"):
        build_model("particlenet", 2, {"flow": 4}, missing_neighbours="mean")


def test_part_trains_on_a_batch_with_one_constituent():
    """A training batch holding a single real constituent (one jet, one constituent) has no batch
    statistics: ParT's BatchNorms use their running statistics instead of failing."""
    torch.manual_seed(0)
    m = build_model("part", 2, {"flow": len(FLOW_VARS)}, **SMALL["part"])
    m.configure_inputs({"flow": FLOW_VARS})
    m.train()
    x, valid = _batch(b=1, n=3)
    valid[:] = False
    valid[0, 0] = True
    before = m.input_bn.running_mean.clone()
    out = m({"flow": x, "flow_valid": valid})["logits"]
    assert out.shape == (1, 2) and torch.isfinite(out).all()
    out.sum().backward()
    torch.testing.assert_close(m.input_bn.running_mean, before)  # no update from one value


def test_trim_batch_keeps_short_jets_and_a_random_subset_of_long_ones():
    """weaver-style training trimming: cut to the q-quantile of the multiplicities; jets at or
    below it keep every constituent, longer jets keep exactly maxlen of their own."""
    from lhcml.models.part import trim_batch

    torch.manual_seed(5)
    n = torch.tensor([3, 5, 8, 10, 20, 20, 2, 7, 9, 12])
    valid = torch.arange(24)[None] < n[:, None]
    ids = torch.where(valid, torch.arange(1, 25, dtype=torch.float32)[None].expand(10, -1), 0.0)
    v2, (ids2,) = trim_batch(valid, [ids.unsqueeze(-1)], (0.5, 0.5))
    maxlen = int(torch.quantile(n.float(), 0.5))
    assert v2.shape == (10, maxlen) and ids2.shape == (10, maxlen, 1)
    assert torch.equal(v2.sum(1), n.clamp(max=maxlen))
    for b in range(10):
        kept = set(ids2[b, :, 0][v2[b]].tolist())
        assert len(kept) == min(int(n[b]), maxlen)
        assert kept <= set(range(1, int(n[b]) + 1))  # only the jet's own real constituents
    # the subsets of the long jets are random: another draw keeps other constituents
    _, (ids3,) = trim_batch(valid, [ids.unsqueeze(-1)], (0.5, 0.5))
    assert not torch.equal(ids2[4], ids3[4]) or not torch.equal(ids2[5], ids3[5])
    # q capped at 1: the longest jet fits the (compacted, 20-slot) batch, nothing changes
    v20, ids20 = valid[:, :20], ids[:, :20]
    v4, (ids4,) = trim_batch(v20, [ids20], (1.0, 1.02))
    assert v4 is v20 and ids4 is ids20


def test_part_train_trim_is_training_only():
    """``train_trim`` changes neither evaluation nor the parameters; a trimmed training step
    runs; bad quantiles are a ConfigError."""
    x, valid = _batch(b=6, n=30)
    outs = []
    for trim in (None, [0.5, 0.6]):
        torch.manual_seed(0)
        m = build_model("part", 2, {"flow": len(FLOW_VARS)}, **SMALL["part"], train_trim=trim)
        m.configure_inputs({"flow": FLOW_VARS})
        with torch.no_grad():
            outs.append(m.eval()({"flow": x, "flow_valid": valid})["logits"])
        out = m.train()({"flow": x, "flow_valid": valid})["logits"]
        assert out.shape == (6, 2) and torch.isfinite(out).all()
        out.sum().backward()
    torch.testing.assert_close(outs[0], outs[1])
    for bad in ([0.9], [0.0, 1.0], [1.0, 0.9]):
        with pytest.raises(ConfigError, match="train_trim"):
            build_model("part", 2, {"flow": len(FLOW_VARS)}, train_trim=bad)


def test_fast_dropout_has_the_dropout_distribution():
    """fast_dropout: zero with probability p (binomial, 5 sigma), the rest scaled by 1/(1-p),
    the same mask for the same torch seed, identity in evaluation."""
    from lhcml.models.layers import FastDropout, fast_dropout

    p, n = 0.1, 400_000
    x = torch.ones(n)
    torch.manual_seed(1)
    y = fast_dropout(x, p)
    frac = float((y == 0).float().mean())
    assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n)
    torch.testing.assert_close(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)))
    torch.manual_seed(1)
    assert torch.equal(fast_dropout(x, p), y)
    assert not torch.equal(fast_dropout(x, p), y)
    drop = FastDropout(p).eval()
    assert drop(x) is x
    xg = torch.randn(50, 7, requires_grad=True)
    out = FastDropout(0.3).train()(xg)
    out.sum().backward()  # gradient: the mask factor
    torch.testing.assert_close(xg.grad, torch.where(out == 0, 0.0, 1 / 0.7))


def test_attention_fast_dropout_path_equals_sdpa():
    """The written-out training attention (fast_dropout) equals scaled_dot_product_attention's
    with the same weights, pair bias and key mask when no weight is dropped (p ~ 0)."""
    from lhcml.models.layers import MultiheadAttention, key_mask

    torch.manual_seed(6)
    ref = MultiheadAttention(16, 4, dropout=1e-12).train()
    ours = MultiheadAttention(16, 4, dropout=1e-12, fast_dropout=True).train()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 7, 16)
    valid = torch.arange(7)[None] < torch.tensor([[7], [4], [2]])
    bias = torch.randn(3, 4, 7, 7) + key_mask(valid)
    torch.testing.assert_close(ours(x, bias=bias)[valid], ref(x, bias=bias)[valid], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours(x, valid)[valid], ref(x, valid)[valid], rtol=1e-5, atol=1e-5)
