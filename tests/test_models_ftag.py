"""Flavour-tagging models: masking/permutation invariance, in-model normalisation, heads."""

from __future__ import annotations

import pytest
import torch

from lhcml.errors import ConfigError
from lhcml.models import build_model, list_models
from lhcml.train.config import check_hyperparameters

TRACK_VARS = ["IP3D_signed_d0_significance", "IP3D_signed_z0_significance", "ptfrac", "dr", "nhits"]
SMALL = {
    "dips": dict(phi_hidden=[16, 16], f_hidden=[16]),
    "gn": dict(embed_dim=16, num_heads=2, num_layers=2, init_hidden=[16], jet_hidden=[16],
               origin_hidden=[16], vertex_hidden=[16]),  # fmt: skip
    "rnnip": dict(lstm_hidden=8, dense=[8]),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _model(name: str):
    torch.manual_seed(0)
    dims = {"tracks": len(TRACK_VARS)} | ({"jets": 2} if name == "gn" else {})
    m = build_model(name, 3, dims, **SMALL[name])
    m.configure_inputs({"tracks": TRACK_VARS, "jets": ["pt", "eta"]})
    # non-trivial normalisation so that padded slots would matter if not masked
    m.set_normalisation("tracks", torch.linspace(-1, 1, len(TRACK_VARS)), torch.linspace(0.5, 2, len(TRACK_VARS)))
    return m.eval()


def _inputs(b: int = 8, n: int = 12, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    valid = torch.rand(b, n, generator=g) < 0.6
    valid[0] = False  # a jet without tracks
    if b > 1:
        valid[1] = True  # a full jet
    return {
        "jets": torch.randn(b, 2, generator=g),
        "tracks": torch.randn(b, n, len(TRACK_VARS), generator=g) * 3,
        "tracks_valid": valid,
    }


def test_registry_lists_ftag_models():
    assert {"dl1", "rnnip", "dips", "gn"} <= set(list_models())


@pytest.mark.parametrize("name", ["dips", "gn", "rnnip"])
def test_invariant_to_track_order_and_padding(name):
    m = _model(name)
    m.with_aux = name == "gn"
    x = _inputs()
    ref = m(x)
    # permute the track slots (valid and padded) independently per jet
    perm = torch.stack([torch.randperm(x["tracks_valid"].shape[1]) for _ in range(len(x["jets"]))])
    xp = dict(x)
    xp["tracks"] = torch.gather(x["tracks"], 1, perm.unsqueeze(-1).expand_as(x["tracks"]))
    xp["tracks_valid"] = torch.gather(x["tracks_valid"], 1, perm)
    # garbage (huge values and NaN) in padded slots
    pad = ~xp["tracks_valid"]
    garbage = xp["tracks"].clone()
    garbage[pad] = 1e6
    garbage[pad.nonzero()[::2].unbind(1)] = float("nan")
    xp["tracks"] = garbage
    out = m(xp)
    assert torch.isfinite(out["logits"]).all()
    torch.testing.assert_close(out["logits"], ref["logits"], atol=1e-5, rtol=1e-5)
    if name == "gn":  # per-track outputs are permutation-equivariant
        inv = torch.argsort(perm, dim=1)
        o = torch.gather(out["track_origin_logits"], 1, inv.unsqueeze(-1).expand_as(out["track_origin_logits"]))
        torch.testing.assert_close(o, ref["track_origin_logits"], atol=1e-5, rtol=1e-5)
        v = out["track_vertex_logits"]
        v = torch.gather(v, 1, inv.unsqueeze(-1).expand_as(v))
        v = torch.gather(v, 2, inv.unsqueeze(1).expand_as(v))
        torch.testing.assert_close(v, ref["track_vertex_logits"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(v, v.transpose(1, 2))


def test_outputs_depend_on_valid_tracks():
    """Masking is not trivially ignoring the tracks: changing a valid track changes the output."""
    for name in ("dips", "gn", "rnnip"):
        m = _model(name)
        x = _inputs()
        y = dict(x)
        y["tracks"] = x["tracks"].clone()
        y["tracks"][1, 0] += 5.0  # jet 1 has all tracks valid
        d = (m(x)["logits"] - m(y)["logits"]).abs().sum(-1)
        assert d[1] > 1e-4 and torch.all(d[2:] == 0), name


def test_rnnip_reads_tracks_by_decreasing_abs_d0_significance():
    m = _model("rnnip")
    x = _inputs(b=1, n=6)
    x["tracks_valid"][:] = torch.tensor([[True, True, True, False, True, False]])
    x["tracks"][0, :, 0] = torch.tensor([0.5, -7.0, 2.0, 99.0, -3.0, 50.0])
    order = [1, 4, 2, 0]  # |sd0| = 7, 3, 2, 0.5 (padded slots ignored)
    seq = m.normalisers["tracks"](x["tracks"][0, order]).unsqueeze(0)
    out, _ = m.lstm(seq)
    expected = m.heads["jet_classification"](out[:, -1])
    torch.testing.assert_close(m(x)["logits"], expected)


def test_normalisation_inside_model():
    m = _model("dips")
    x = _inputs()
    mean, std = m.normalisers["tracks"].mean.clone(), m.normalisers["tracks"].std.clone()
    ref = m(x)["logits"]
    m.set_normalisation("tracks", torch.zeros(len(TRACK_VARS)), torch.ones(len(TRACK_VARS)))
    scaled = dict(x, tracks=(x["tracks"] - mean) / std)
    torch.testing.assert_close(m(scaled)["logits"], ref)
    with pytest.raises(ValueError):
        m.set_normalisation("tracks", torch.zeros(len(TRACK_VARS)), torch.zeros(len(TRACK_VARS)))


def test_gn_aux_losses_and_vertex_targets():
    m = _model("gn")
    m.train()
    b, n = 2, 4
    batch = {
        "jets": torch.randn(b, 2),
        "tracks": torch.randn(b, n, len(TRACK_VARS)),
        "tracks_valid": torch.tensor([[True, True, True, False], [True, True, False, False]]),
        "labels": torch.tensor([0, 2]),
        "weights": torch.ones(b),
        "tracks_ftagTruthOriginLabel": torch.tensor([[3, 3, 2, -1], [2, 1, 0, 0]]),
        "tracks_ftagTruthVertexIndex": torch.tensor([[1, 1, 0, 5], [-1, -1, 0, 0]]),
    }
    losses = m.losses(m(batch), batch)
    assert set(losses) == {"jet_classification", "track_origin", "track_vertexing"}
    head = m.heads["track_vertexing"]
    same = torch.tensor([[[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], [[0] * 4] * 4], dtype=torch.float)
    # perfect logits -> ~0 loss; inverted -> large; -1 (no vertex) pairs are "different"
    good = head.loss({"track_vertex_logits": (same * 2 - 1) * 30}, batch)
    bad = head.loss({"track_vertex_logits": (1 - 2 * same) * 30}, batch)
    assert good < 1e-6 and bad > 10
    # origin class weights: only class 3 (fromB) counts -> CE over the two fromB tracks of jet 0
    origin = m.heads["track_origin"]
    out = m(batch)
    origin.set_class_weights([0, 0, 0, 1, 0, 0, 0, 0])
    expect = torch.nn.functional.cross_entropy(out["track_origin_logits"][0, :2], torch.tensor([3, 3]))
    torch.testing.assert_close(origin.loss(out, batch), expect)
    with pytest.raises(ConfigError, match="non-negative"):
        origin.set_class_weights([0.0] * 8)
    m.set_head_weights({"track_vertexing": 0.0})
    assert "track_vertexing" not in m.losses(m(batch), batch)
    assert m.label_fields() == {"tracks": ["ftagTruthOriginLabel"]}
    with pytest.raises(ConfigError, match="unknown head 'vertexing'"):
        m.set_head_weights({"vertexing": 1.0})


def test_class_weights_weight_the_loss():
    m = _model("dips")
    x = _inputs() | {"labels": torch.tensor([0, 1, 2, 0, 1, 2, 0, 0]), "weights": torch.ones(8)}
    head = m.heads["jet_classification"]
    out = m(x)
    base = head.loss(out, x)
    head.set_class_weights([1.0, 1.0, 1e-6])  # ignore light jets
    keep = x["labels"] != 2
    expect = torch.nn.functional.cross_entropy(out["logits"][keep], x["labels"][keep])
    torch.testing.assert_close(head.loss(out, x), expect, atol=1e-5, rtol=1e-4)
    assert not torch.isclose(base, expect)


def test_bad_model_configs():
    from lhcml.models.ftag import GN

    with pytest.raises(ConfigError, match="did you mean 'embed_dim'"):
        check_hyperparameters(GN, {"embed_dims": 3}, "gn")
    with pytest.raises(ConfigError, match="needs input group"):
        build_model("dips", 3, {"jets": 3})
    with pytest.raises(ConfigError, match="does not use input group"):
        build_model("dips", 3, {"tracks": 3, "jets": 2})
    with pytest.raises(ConfigError, match="unknown model 'dipz'"):
        build_model("dipz", 3, {"tracks": 3})
    m = build_model("rnnip", 3, {"tracks": 2})
    with pytest.raises(ConfigError, match="sort_by"):
        m.configure_inputs({"tracks": ["a", "b"]})
